//! The text transform: a batch of strings in, BERT-style i64 tensors out.
//!
//! A [`TextTransform`] loads a Hugging Face `tokenizer.json` with the
//! `tokenizers` crate and encodes each text with the tokenizer's own
//! normaliser, pre-tokeniser, model and post-processor (special tokens such
//! as `[CLS]` and `[SEP]`), truncating to `max_length` (special tokens
//! included) exactly as the Python `tokenizers` package does, then pads on
//! the right to `max_length` or to the batch's longest text. Texts are
//! encoded one after another on the calling thread (the tokenizer's own
//! rayon parallelism is not used): the caller runs this on a blocking pool
//! and gets its parallelism from there.

use std::path::PathBuf;

use mlserve_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// How the texts of a batch are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Every row is `max_length` long (fixed shapes; what most exported models expect).
    #[default]
    MaxLength,
    /// Rows are as long as the batch's longest encoding (at most `max_length`).
    Longest,
}

/// One output tensor of the text transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextOutput {
    /// Token ids.
    InputIds,
    /// 1 for real tokens, 0 for padding.
    AttentionMask,
    /// Segment ids (0 for a single sequence).
    TokenTypeIds,
}

impl TextOutput {
    /// The conventional tensor name (`input_ids`, `attention_mask`, `token_type_ids`).
    pub fn as_str(self) -> &'static str {
        match self {
            TextOutput::InputIds => "input_ids",
            TextOutput::AttentionMask => "attention_mask",
            TextOutput::TokenTypeIds => "token_type_ids",
        }
    }
}

/// What the text transform does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Path of the Hugging Face `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Longest encoding, special tokens included.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Pad to `max_length` or to the longest text of the batch.
    #[serde(default)]
    pub padding: Padding,
    /// Cut longer texts to `max_length`; when false, a longer text is an error.
    #[serde(default = "yes")]
    pub truncation: bool,
    /// Add the tokenizer's special tokens (`[CLS]`, `[SEP]`, ...).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// The tensors produced, in this order.
    #[serde(default = "default_outputs")]
    pub outputs: Vec<TextOutput>,
}

fn default_max_length() -> usize {
    128
}

fn yes() -> bool {
    true
}

fn default_outputs() -> Vec<TextOutput> {
    vec![
        TextOutput::InputIds,
        TextOutput::AttentionMask,
        TextOutput::TokenTypeIds,
    ]
}

impl TextSpec {
    /// A spec with every default for the tokenizer at `path`.
    pub fn new(path: impl Into<PathBuf>) -> TextSpec {
        TextSpec {
            tokenizer: path.into(),
            max_length: default_max_length(),
            padding: Padding::MaxLength,
            truncation: true,
            add_special_tokens: true,
            outputs: default_outputs(),
        }
    }
}

/// Why texts could not be tokenised.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The spec is unusable (zero max length, no outputs, ...).
    #[error("invalid text spec: {0}")]
    InvalidSpec(String),
    /// The tokenizer file is missing or not a valid `tokenizer.json`.
    #[error("cannot load tokenizer {path}: {message}")]
    Load {
        /// The file named by the spec.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A text is longer than `max_length` and truncation is off.
    #[error("text {index} has {tokens} tokens, over max_length {max_length} (truncation is off)")]
    TooLong {
        /// Position of the text in the batch.
        index: usize,
        /// Its token count.
        tokens: usize,
        /// The limit.
        max_length: usize,
    },
    /// The tokenizer refused a text.
    #[error("cannot tokenize text {index}: {message}")]
    Encode {
        /// Position of the text in the batch.
        index: usize,
        /// The tokenizer's message.
        message: String,
    },
}

impl TextError {
    /// The shared error code (and so the HTTP status and gRPC code) of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            TextError::InvalidSpec(_) | TextError::TooLong { .. } | TextError::Encode { .. } => {
                ErrorCode::BadRequest
            }
            TextError::Load { .. } => ErrorCode::BadRequest,
        }
    }
}

/// One i64 tensor of a [`TextBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextTensor {
    /// Which output this is.
    pub output: TextOutput,
    /// `batch * len` values, row-major.
    pub data: Vec<i64>,
}

/// The tensors of one encoded batch, all of shape `[batch, len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBatch {
    /// `[batch, len]`.
    pub shape: [usize; 2],
    /// The spec's outputs, in the spec's order.
    pub tensors: Vec<TextTensor>,
}

impl TextBatch {
    /// The tensor of `output`, if the spec asked for it.
    pub fn get(&self, output: TextOutput) -> Option<&[i64]> {
        self.tensors
            .iter()
            .find(|t| t.output == output)
            .map(|t| t.data.as_slice())
    }
}

/// A loaded tokenizer with its spec; cheap to share behind an `Arc`.
pub struct TextTransform {
    spec: TextSpec,
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_type_id: u32,
}

impl std::fmt::Debug for TextTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTransform")
            .field("spec", &self.spec)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl TextTransform {
    /// Reads and parses the tokenizer file (blocking IO and CPU work: call it
    /// from `spawn_blocking`). The padding token is the one the file
    /// configures, else `[PAD]`, else id 0.
    pub fn load(spec: TextSpec) -> Result<TextTransform, TextError> {
        if spec.max_length == 0 || spec.outputs.is_empty() {
            return Err(TextError::InvalidSpec(
                "max_length must be positive and outputs non-empty".into(),
            ));
        }
        let load_error = |message: String| TextError::Load {
            path: spec.tokenizer.display().to_string(),
            message,
        };
        let mut tokenizer =
            Tokenizer::from_file(&spec.tokenizer).map_err(|e| load_error(e.to_string()))?;
        let (pad_id, pad_type_id) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_type_id),
            None => (tokenizer.token_to_id("[PAD]").unwrap_or(0), 0),
        };
        tokenizer.with_padding(None);
        let truncation = spec.truncation.then_some(TruncationParams {
            max_length: spec.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| load_error(e.to_string()))?;
        tracing::debug!(path = %spec.tokenizer.display(), vocab = tokenizer.get_vocab_size(true), "tokenizer loaded");
        Ok(TextTransform {
            spec,
            tokenizer,
            pad_id,
            pad_type_id,
        })
    }

    /// The spec this transform was loaded with.
    pub fn spec(&self) -> &TextSpec {
        &self.spec
    }

    /// Encodes a batch of texts (synchronous CPU work).
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<TextBatch, TextError> {
        let max_length = self.spec.max_length;
        let mut encodings = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let enc = self
                .tokenizer
                .encode(text.as_ref(), self.spec.add_special_tokens)
                .map_err(|e| TextError::Encode {
                    index,
                    message: e.to_string(),
                })?;
            if enc.len() > max_length {
                return Err(TextError::TooLong {
                    index,
                    tokens: enc.len(),
                    max_length,
                });
            }
            encodings.push(enc);
        }
        let len = match self.spec.padding {
            Padding::MaxLength => max_length,
            Padding::Longest => encodings.iter().map(|e| e.len()).max().unwrap_or(0),
        };
        let tensors = self
            .spec
            .outputs
            .iter()
            .map(|&output| {
                let mut data = Vec::with_capacity(texts.len() * len);
                for enc in &encodings {
                    let (values, pad) = match output {
                        TextOutput::InputIds => (enc.get_ids(), self.pad_id),
                        TextOutput::AttentionMask => (enc.get_attention_mask(), 0),
                        TextOutput::TokenTypeIds => (enc.get_type_ids(), self.pad_type_id),
                    };
                    data.extend(values.iter().map(|&v| v as i64));
                    data.extend(std::iter::repeat_n(pad as i64, len - values.len()));
                }
                TextTensor { output, data }
            })
            .collect();
        Ok(TextBatch {
            shape: [texts.len(), len],
            tensors,
        })
    }
}
