//! What the fuzz targets share: checks that hold for every decoded request,
//! and a runtime for the decoders that are `async` over in-memory input.

use std::sync::OnceLock;

use mlserve_proto::pb;
use mlserve_proto::DataType;
use prost::Message;

/// Checks that `message` re-encodes: its encoding decodes to a message of
/// the same encoded size, equal to it unless it holds a NaN (parameters are
/// doubles, and NaN is never equal to itself).
pub fn assert_reencodes<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let bytes = message.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("an encoded message decodes");
    assert_eq!(again.encoded_len(), bytes.len(), "re-encoded size differs");
    if again != *message {
        assert!(
            format!("{message:?}").contains("NaN"),
            "re-decoded message differs:\n{message:?}\n{again:?}"
        );
    }
}

/// Checks a decoded inference request: it re-encodes, and every input of a
/// fixed-size datatype that carries raw contents has exactly the bytes its
/// shape needs; with `check_bytes`, every BYTES input also holds as many
/// well-formed elements as its shape (true of JSON data; binary BYTES data is
/// checked later, by the inference role).
pub fn assert_request_consistent(request: &pb::ModelInferRequest, check_bytes: bool) {
    assert_reencodes(request);
    if request.raw_input_contents.len() != request.inputs.len() {
        // Inputs in shared memory carry no raw contents.
        return;
    }
    for (input, raw) in request.inputs.iter().zip(&request.raw_input_contents) {
        let dtype = DataType::parse(&input.datatype).expect("decoded datatype is known");
        let count = mlserve_proto::datatype::element_count(&input.shape)
            .expect("decoded shape has an element count");
        match dtype.element_size() {
            Some(size) => assert_eq!(
                Some(raw.len()),
                count.checked_mul(size),
                "input '{}' {:?} {dtype}",
                input.name,
                input.shape
            ),
            None if !check_bytes => {}
            None => {
                let elements = mlserve_proto::datatype::split_bytes_elements(raw)
                    .expect("decoded BYTES contents are length-prefixed elements");
                assert_eq!(
                    elements.len(),
                    count,
                    "input '{}' BYTES elements",
                    input.name
                );
            }
        }
    }
}

/// Runs `future` to completion on one current-thread runtime kept for the
/// whole fuzzing process.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime")
        })
        .block_on(future)
}

/// The feature view the ingest targets read rows for: entity `user`
/// (join key `user_id`, int64) and one field of every type; the event time
/// is column `ts`.
pub fn ingest_view() -> (
    mlserve_proto::features::FeatureView,
    Vec<mlserve_proto::features::Entity>,
) {
    use mlserve_proto::features::{Entity, FeatureView, Field};
    let field = |name: &str, dtype: &str| Field {
        name: name.into(),
        dtype: dtype.into(),
    };
    let view = FeatureView {
        name: "user_stats".into(),
        entities: vec!["user".into()],
        fields: vec![
            field("amount", "float64"),
            field("count", "int64"),
            field("active", "bool"),
            field("city", "string"),
        ],
        ..Default::default()
    };
    let entity = Entity {
        name: "user".into(),
        join_keys: vec!["user_id".into()],
        value_type: "int64".into(),
        ..Default::default()
    };
    (view, vec![entity])
}

/// Splits a fuzz input into its leading selector byte and the UTF-8 text
/// after it; `None` when it is empty or the rest is not UTF-8.
pub fn selector_and_text(data: &[u8]) -> Option<(u8, &str)> {
    let (&pick, rest) = data.split_first()?;
    Some((pick, std::str::from_utf8(rest).ok()?))
}

/// A fuzz input's leading selector byte, handed out as small choices, lowest
/// bits first:
///
/// ```ignore
/// let Some((mut pick, body)) = Selector::split(data) else { return };
/// let coding = pick.choose(&CODINGS); // as many bits as index CODINGS
/// let step = pick.bits(4);            // the next 4 bits, 0 to 15
/// ```
///
/// Once its 8 bits are spent, every further choice reads 0 (the first one).
#[derive(Clone, Copy, Debug)]
pub struct Selector {
    byte: u8,
    used: u32,
}

impl Selector {
    /// Splits `data` into its selector byte and the rest; `None` when empty.
    pub fn split(data: &[u8]) -> Option<(Self, &[u8])> {
        let (&byte, rest) = data.split_first()?;
        Some((Self { byte, used: 0 }, rest))
    }

    /// The next `n` bits (at most 8) as a number, fewer when fewer are left.
    pub fn bits(&mut self, n: u32) -> u8 {
        let n = n.min(8 - self.used);
        let value = (u32::from(self.byte) >> self.used) & ((1u32 << n) - 1);
        self.used += n;
        value as u8
    }

    /// One of `choices` (not empty), read from as many bits as index them,
    /// modulo their number.
    pub fn choose<'a, T>(&mut self, choices: &'a [T]) -> &'a T {
        let n = usize::BITS - choices.len().saturating_sub(1).leading_zeros();
        &choices[usize::from(self.bits(n)) % choices.len()]
    }
}

/// `data` cut into pieces of `step` bytes (the last one shorter), as a body
/// arrives from a socket; one piece when `step` is 0.
pub fn pieces(data: &bytes::Bytes, step: usize) -> Vec<bytes::Bytes> {
    if step == 0 || data.is_empty() {
        return vec![data.clone()];
    }
    (0..data.len())
        .step_by(step)
        .map(|start| data.slice(start..data.len().min(start + step)))
        .collect()
}
