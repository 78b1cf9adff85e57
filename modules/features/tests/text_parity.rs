//! Parity of the text transform with the Python `tokenizers` package
//! (scripts/reference/text_reference.py, run from the repository's .venv)
//! on the real all-MiniLM-L6-v2 BERT WordPiece tokenizer, and its errors.

#[allow(dead_code)]
#[path = "support/python.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use mlserve_features::transform::text::{Padding, TextOutput, TextSpec, TextTransform};
use mlserve_proto::ErrorCode;
use support::{minilm_tokenizer, python, root, run, scratch};

fn texts() -> Vec<String> {
    let long = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(40);
    vec![
        "Hello, world!".into(),
        String::new(),
        "   ".into(),
        "Crème brûlée à la façon de Zoë: naïve café, Ångström, Straße.".into(),
        "日本語のテキストと中文文本，还有한국어 텍스트.".into(),
        "Emoji 🤖🚀 and symbols ™ © ½ → ∞; tabs\tand\nnewlines.".into(),
        "UPPER lower MiXeD unbelievably-hyphenated words don't can't it's".into(),
        "Numbers 3.14159, 1,000,000 and 42nd; e-mail a.b@example.com; url https://x.org/a?b=c"
            .into(),
        long,
        "Ünïcödé ḍíàçrîtîçs ǅ ﬁ ligature, Ω ≈ ω, ㎏ ①".into(),
    ]
}

struct Case {
    tag: &'static str,
    max_length: usize,
    padding: Padding,
    truncation: bool,
    special: bool,
    texts: Vec<String>,
}

fn python_reference(tokenizer: &Path, case: &Case, dir: &Path) -> ([usize; 2], Vec<Vec<i64>>) {
    let texts_file = dir.join(format!("{}.txt", case.tag));
    let terminated: String = case.texts.iter().map(|t| format!("{t}\0")).collect();
    std::fs::write(&texts_file, terminated).expect("texts");
    let prefix = dir.join(case.tag);
    let mut cmd = Command::new(python());
    cmd.arg(root().join("scripts/reference/text_reference.py"))
        .arg("--tokenizer")
        .arg(tokenizer)
        .args(["--max-length", &case.max_length.to_string()])
        .args([
            "--padding",
            if case.padding == Padding::Longest {
                "longest"
            } else {
                "max_length"
            },
        ])
        .arg("--texts")
        .arg(&texts_file)
        .arg("--out")
        .arg(&prefix);
    if !case.truncation {
        cmd.arg("--no-truncation");
    }
    if !case.special {
        cmd.arg("--no-special-tokens");
    }
    run(&mut cmd);
    let shape_text = std::fs::read_to_string(prefix.with_extension("shape")).expect("shape");
    let dims: Vec<usize> = shape_text
        .split_whitespace()
        .map(|d| d.parse().expect("dim"))
        .collect();
    let tensors = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|name| {
            let bytes =
                std::fs::read(dir.join(format!("{}.{name}.i64", case.tag))).expect("tensor");
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        })
        .collect();
    ([dims[0], dims[1]], tensors)
}

#[test]
fn tokenizer_equals_python_tokenizers() {
    let dir = scratch("text");
    let tokenizer = minilm_tokenizer();
    let all = texts();
    let cases = [
        Case {
            tag: "max_length_128",
            max_length: 128,
            padding: Padding::MaxLength,
            truncation: true,
            special: true,
            texts: all.clone(),
        },
        Case {
            tag: "longest_512",
            max_length: 512,
            padding: Padding::Longest,
            truncation: true,
            special: true,
            texts: all.clone(),
        },
        Case {
            tag: "truncate_16",
            max_length: 16,
            padding: Padding::MaxLength,
            truncation: true,
            special: true,
            texts: all.clone(),
        },
        Case {
            tag: "no_special",
            max_length: 32,
            padding: Padding::Longest,
            truncation: true,
            special: false,
            texts: all.clone(),
        },
        Case {
            tag: "no_truncation",
            max_length: 64,
            padding: Padding::Longest,
            truncation: false,
            special: true,
            texts: all[..4].to_vec(),
        },
        Case {
            tag: "single_empty",
            max_length: 8,
            padding: Padding::Longest,
            truncation: true,
            special: true,
            texts: vec![String::new()],
        },
    ];
    for case in &cases {
        let (shape, want) = python_reference(&tokenizer, case, &dir);
        let spec = TextSpec {
            max_length: case.max_length,
            padding: case.padding,
            truncation: case.truncation,
            add_special_tokens: case.special,
            ..TextSpec::new(&tokenizer)
        };
        let transform = TextTransform::load(spec).expect("load tokenizer");
        let got = transform.encode(&case.texts).expect("encode");
        assert_eq!(got.shape, shape, "{}", case.tag);
        for (output, want) in [
            TextOutput::InputIds,
            TextOutput::AttentionMask,
            TextOutput::TokenTypeIds,
        ]
        .iter()
        .zip(&want)
        {
            let got = got.get(*output).expect("output");
            for (row, (g, w)) in got
                .chunks(shape[1].max(1))
                .zip(want.chunks(shape[1].max(1)))
                .enumerate()
            {
                assert_eq!(
                    g,
                    w,
                    "{} {} row {row}: {:?}",
                    case.tag,
                    output.as_str(),
                    case.texts[row]
                );
            }
            assert_eq!(got.len(), want.len());
        }
        eprintln!("{}: shape {:?} equal", case.tag, got.shape);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_errors_are_typed() {
    let tokenizer = minilm_tokenizer();
    let strict = TextSpec {
        max_length: 8,
        truncation: false,
        ..TextSpec::new(&tokenizer)
    };
    let transform = TextTransform::load(strict).expect("load");
    let err = transform
        .encode(&[
            "short",
            "this sentence has many more than eight tokens in it",
        ])
        .expect_err("too long");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert!(err.to_string().contains("text 1"), "{err}");

    let missing =
        TextTransform::load(TextSpec::new("/nonexistent/tokenizer.json")).expect_err("missing");
    assert_eq!(missing.code(), ErrorCode::BadRequest, "{missing}");
    let dir = scratch("text-errors");
    let garbage = dir.join("tokenizer.json");
    std::fs::write(&garbage, "{not json").expect("write");
    assert!(TextTransform::load(TextSpec::new(&garbage)).is_err());
    let zero = TextTransform::load(TextSpec {
        max_length: 0,
        ..TextSpec::new(&tokenizer)
    })
    .expect_err("zero");
    assert_eq!(zero.code(), ErrorCode::BadRequest);

    // Only the requested outputs, in the requested order; an empty batch is [0, max_length].
    let spec = TextSpec {
        outputs: vec![TextOutput::AttentionMask, TextOutput::InputIds],
        ..TextSpec::new(&tokenizer)
    };
    let transform = TextTransform::load(spec).expect("load");
    let batch = transform.encode(&["a b c"]).expect("encode");
    let order: Vec<_> = batch.tensors.iter().map(|t| t.output).collect();
    assert_eq!(order, [TextOutput::AttentionMask, TextOutput::InputIds]);
    assert!(batch.get(TextOutput::TokenTypeIds).is_none());
    assert_eq!(
        batch.get(TextOutput::AttentionMask).expect("mask")[..6],
        [1, 1, 1, 1, 1, 0]
    );
    let empty = transform.encode::<&str>(&[]).expect("empty batch");
    assert_eq!(empty.shape, [0, 128]);
    let _ = std::fs::remove_dir_all(&dir);
}
