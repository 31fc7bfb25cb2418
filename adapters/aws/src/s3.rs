//! The object port on an S3 bucket.

use crate::{Clients, aws_error};
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use wharf_core::CoreError;
use wharf_core::ports::{ObjectStore, Result, check_object_key, check_object_prefix};

/// Creates the bucket unless this account already has it.
pub async fn bootstrap_bucket(clients: &Clients) -> Result<()> {
    let bucket = &clients.settings.bucket;
    let mut create = clients.s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that takes no location constraint.
    if let Some(region) = clients.s3.config().region().map(|r| r.to_string())
        && region != "us-east-1"
    {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(e) => Err(aws_error(&format!("creating bucket {bucket}"), e)),
    }
}

/// Objects in one S3 bucket, under their keys as given.
#[derive(Debug, Clone)]
pub struct S3Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Objects {
    pub fn new(clients: &Clients) -> S3Objects {
        S3Objects {
            client: clients.s3.clone(),
            bucket: clients.settings.bucket.clone(),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn presign_put(&self, key: &str, valid: std::time::Duration) -> Result<Option<String>> {
        check_object_key(key)?;
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(valid)
            .map_err(CoreError::internal)?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .presigned(config)
            .await
            .map_err(|e| aws_error("presigning an upload", e))?;
        Ok(Some(presigned.uri().to_owned()))
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        check_object_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| aws_error("storing an object", e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_object_key(key)?;
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    CoreError::NotFound("object")
                } else {
                    aws_error("reading an object", e)
                }
            })?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| aws_error("reading an object", e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_object_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| aws_error("deleting an object", e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        check_object_prefix(prefix)?;
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| aws_error("listing objects", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }
}
