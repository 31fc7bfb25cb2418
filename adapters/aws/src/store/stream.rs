//! The table's stream, read next to the item layout it reports: a new raw part is a unit of
//! raw records to process (named by its sort key), a new output part says its feed has outputs
//! to publish. Images arrive in DynamoDB's JSON (`{"S": "…"}`, `{"B": "<base64>"}`), as
//! Lambda's stream events carry them.

use super::packs::part_records_of;
use base64::Engine as _;
use serde_json::Value;
use wharf_core::domain::{RawRecord, StreamChange};
use wharf_core::ports::Result;
use wharf_core::{CoreError, FeedId, TenantId};

/// The change an inserted item's new image reports, if the pipeline acts on it.
pub fn change_of(sequence: &str, image: &Value) -> Result<Option<StreamChange>> {
    let text = |name: &str| image[name]["S"].as_str().unwrap_or_default();
    match text("kind") {
        "raw_pack" => {
            // The part's sort key names it: the unit its outputs are stored once for.
            let unit = text("sk");
            if unit.is_empty() {
                return Err(CoreError::internal("a raw part without its sort key"));
            }
            let packed = base64::engine::general_purpose::STANDARD
                .decode(image["docz"]["B"].as_str().unwrap_or_default())
                .map_err(CoreError::internal)?;
            Ok(Some(StreamChange::RawRecords {
                sequence: sequence.to_owned(),
                unit: unit.to_owned(),
                records: part_records_of::<RawRecord>(&packed)?,
            }))
        }
        "output_pack" => {
            let tenant = TenantId::parse(text("tenant_id"));
            let feed = FeedId::parse(text("feed_id"));
            match tenant.ok().zip(feed.ok()) {
                Some((tenant, feed)) => Ok(Some(StreamChange::Outputs {
                    sequence: sequence.to_owned(),
                    tenant,
                    feed,
                })),
                None => Err(CoreError::internal("an output part without its feed")),
            }
        }
        _ => Ok(None),
    }
}
