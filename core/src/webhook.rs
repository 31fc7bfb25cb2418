//! Standard Webhooks signing: `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed with the base64 part of the
//! `whsec_` secret). During a secret rotation each delivery carries one signature per secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signature of one message with one `whsec_…` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(key)
        .map_err(|_| "the signing secret is not base64".to_owned())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The three Standard Webhooks headers for a message signed with every secret in `secrets`.
pub fn headers(
    secrets: &[String],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let signatures = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![
        ("webhook-id".into(), id.to_owned()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signatures.join(" ")),
        ("content-type".into(), "application/json".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn the_specifications_test_vector_signs_as_published() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature,
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned())
        );
    }
}
