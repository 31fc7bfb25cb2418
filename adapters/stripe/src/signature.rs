//! Stripe's webhook signatures.
//!
//! A `Stripe-Signature` header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, where each `v1` is
//! HMAC-SHA256 of `"{t}.{raw body}"` under the endpoint's signing secret. A signature older or
//! newer than the tolerance is refused, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

/// Checks a `Stripe-Signature` header against `body`; the error says why it fails.
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix: i64) -> Result<(), String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => signatures.push(sig),
            _ => {}
        }
    }
    let t = timestamp.ok_or("the signature header has no timestamp")?;
    if (now_unix - t).abs() > TOLERANCE_SECS {
        return Err("the signature's timestamp is outside the tolerance".into());
    }
    if signatures.is_empty() {
        return Err("the signature header has no v1 signature".into());
    }
    for sig in signatures {
        let Some(expected) = from_hex(sig) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| "unusable webhook secret")?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err("no signature matches".into())
}

/// Signs `body` as Stripe does (for tests and tools).
pub fn sign(secret: &str, body: &[u8], t: i64) -> Result<String, String> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "unusable webhook secret")?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("t={t},v1={hex}"))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_within_the_tolerance_and_only_for_their_body() {
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let header = sign("whsec_test", body, 1_000_000).expect("signs");
        assert_eq!(verify("whsec_test", &header, body, 1_000_100), Ok(()));
        assert!(verify("whsec_other", &header, body, 1_000_100).is_err());
        assert!(verify("whsec_test", &header, b"{}", 1_000_100).is_err());
        assert!(verify("whsec_test", &header, body, 1_000_000 + TOLERANCE_SECS + 1).is_err());
        assert!(verify("whsec_test", "v1=00", body, 1_000_000).is_err());
        // Several v1 signatures (a secret being rolled): any one may match.
        let rolled = format!(
            "t=1000000,v1=deadbeef,{}",
            header.split_once(',').expect("two parts").1
        );
        assert_eq!(verify("whsec_test", &rolled, body, 1_000_000), Ok(()));
    }
}
