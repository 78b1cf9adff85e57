//! Binary payloads inside JSON bodies: standard base64, optionally behind a
//! data URL prefix (`data:image/png;base64,...`), as browsers and most
//! clients write an image into JSON.

use base64::Engine as _;

/// Decodes `text` as standard base64, skipping a `data:...;base64,` prefix
/// and surrounding whitespace when present.
pub fn decode_base64_payload(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let data = text.split_once(";base64,").map_or(text, |(_, data)| data);
    base64::engine::general_purpose::STANDARD.decode(data.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_data_url_payloads_decode_alike() {
        assert_eq!(decode_base64_payload("AAEC").unwrap(), vec![0, 1, 2]);
        assert_eq!(
            decode_base64_payload(" data:image/png;base64,AAEC\n").unwrap(),
            vec![0, 1, 2]
        );
        assert!(decode_base64_payload("not base64!").is_err());
    }
}
