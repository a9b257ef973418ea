//! HMAC-SHA256 signatures, as GitHub sends them
//! (`X-Hub-Signature-256: sha256=<hex>`) and as many others do with their own
//! header name and prefix: the intake checks them on webhooks that come in,
//! and push delivery signs the requests it sends the same way. A module of
//! its own because both use it and neither owns it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `prefix` + hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8], prefix: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("{prefix}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `given` (e.g. `sha256=ab12…`) is the signature of `body`. The
/// comparison takes the same time wherever the first difference is.
pub fn verify(secret: &[u8], body: &[u8], given: &str, prefix: &str) -> bool {
    let Some(hex_part) = given.trim().strip_prefix(prefix) else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_part) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let signature = sign(b"It's a Secret to Everybody", b"Hello, World!", "sha256=");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(verify(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &signature,
            "sha256="
        ));
    }

    #[test]
    fn wrong_secret_body_prefix_or_hex_fail() {
        let good = sign(b"secret-1", b"body", "sha256=");
        assert!(!verify(b"secret-2", b"body", &good, "sha256="));
        assert!(!verify(b"secret-1", b"body!", &good, "sha256="));
        assert!(!verify(
            b"secret-1",
            b"body",
            &good.replace("sha256=", "sha1="),
            "sha256="
        ));
        assert!(!verify(b"secret-1", b"body", "sha256=zz", "sha256="));
        assert!(!verify(b"secret-1", b"body", "", "sha256="));
    }
}
