//! Throughput of the features role's transforms, measured side by side with
//! the Python code users compare against (PIL + numpy, the `tokenizers`
//! package) in the same run.
//!
//! ```text
//! cargo run --release -p mlserve-features --example transform_bench [-- SECONDS]
//! ```
//!
//! Images: a 640x480 4:2:0 JPEG (quality 90) and the ResNet-50 recipe
//! (decode, resize to 256, crop 224, normalise NCHW), on one thread and on
//! every core. Text: batches of 32 sentences through the all-MiniLM-L6-v2
//! tokenizer, padded to 128. Each row is the best of 3 runs of SECONDS
//! (default 2). Prints a table and writes it to
//! bench/results/<date>/transforms.md.

#[allow(dead_code)]
#[path = "../tests/support/python.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use mlserve_features::transform::image::{self, ImageSpec};
use mlserve_features::transform::text::{TextSpec, TextTransform};

/// Runs `work` (which returns how many items it did) on `threads` threads
/// for about `secs`; returns items per second over all threads.
fn rate(threads: usize, secs: f64, work: &(dyn Fn() -> usize + Sync)) -> f64 {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while start.elapsed() < deadline {
                        n += work();
                    }
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// The best of `ROUNDS` measurements: other work on a shared machine only
/// ever slows a round down.
const ROUNDS: usize = 3;

fn best(threads: usize, secs: f64, work: &(dyn Fn() -> usize + Sync)) -> f64 {
    (0..ROUNDS)
        .map(|_| rate(threads, secs, work))
        .fold(0.0, f64::max)
}

/// Items per second of the Python reference, single thread, timed in Python.
fn python_rate(code: &str) -> f64 {
    let out = support::run(
        Command::new(support::python())
            .current_dir(support::root().join("scripts/reference"))
            .args(["-c", code]),
    );
    out.trim().parse().expect("python prints a rate")
}

fn sentences() -> Vec<String> {
    let base = [
        "A man is eating food.",
        "The new movie is awesome and everyone in the theatre loved every minute of it.",
        "Crème brûlée is a dessert consisting of a rich custard base topped with a layer of hardened caramelized sugar.",
        "How do I reset my password if I no longer have access to the e-mail address on my account?",
    ];
    (0..32).map(|i| base[i % base.len()].to_string()).collect()
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = support::scratch("bench");
    let images = support::make_images(&dir);
    let jpeg_path = images
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n == "photo_640x480_q90_s2.jpg")
        })
        .expect("the 640x480 JPEG");
    let jpeg = std::fs::read(jpeg_path).expect("jpeg");
    let spec = ImageSpec::default();
    let tokenizer = support::minilm_tokenizer();
    let text = TextTransform::load(TextSpec::new(&tokenizer)).expect("tokenizer");
    let batch = sentences();

    let mut rows: Vec<(String, usize, f64)> = Vec::new();
    let decode = || {
        image::decode(&jpeg, spec.max_pixels).expect("decode");
        1
    };
    let decoded = image::decode(&jpeg, spec.max_pixels).expect("decode");
    let resize = || {
        image::resize_crop(&spec, &decoded).expect("resize");
        1
    };
    let full = || {
        image::transform(&spec, &jpeg).expect("transform");
        1
    };
    let tokenize = || text.encode(&batch).expect("encode").shape[0];
    let cases: [(&str, &(dyn Fn() -> usize + Sync)); 4] = [
        ("jpeg decode 640x480 (libjpeg-turbo)", &decode),
        ("resize 256 + crop 224 (decoded 640x480)", &resize),
        ("image transform 640x480 -> 3x224x224", &full),
        ("text transform, batch 32, len 128", &tokenize),
    ];
    for threads in [1, cores] {
        for (name, work) in cases {
            rows.push((name.into(), threads, best(threads, secs, work)));
        }
    }
    let py_image = python_rate(&format!(
        "import time, argparse, image_reference as r\n\
         a = argparse.Namespace(resize=256, crop=[224, 224], interpolation='bilinear', scale=255.0,\n\
             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], layout='NCHW')\n\
         def once():\n\
         \x20   n, t = 0, time.perf_counter()\n\
         \x20   while time.perf_counter() - t < {secs}: r.transform({jpeg_path:?}, a); n += 1\n\
         \x20   return n / (time.perf_counter() - t)\n\
         print(max(once() for _ in range({ROUNDS})))"
    ));
    rows.push(("image transform, PIL + numpy (Python)".into(), 1, py_image));
    let py_text = python_rate(&format!(
        "import time\nfrom tokenizers import Tokenizer\n\
         tok = Tokenizer.from_file({tokenizer:?})\n\
         tok.enable_truncation(max_length=128); tok.enable_padding(length=128)\n\
         texts = {texts:?}\n\
         def once():\n\
         \x20   n, t = 0, time.perf_counter()\n\
         \x20   while time.perf_counter() - t < {secs}: tok.encode_batch(texts); n += len(texts)\n\
         \x20   return n / (time.perf_counter() - t)\n\
         print(max(once() for _ in range({ROUNDS})))",
        texts = batch
    ));
    rows.push((
        "text transform, tokenizers encode_batch (Python, its own threads)".into(),
        cores,
        py_text,
    ));

    let mut table =
        String::from("| transform | threads | items/s | us/item/thread |\n|---|---:|---:|---:|\n");
    for (name, threads, per_sec) in &rows {
        table += &format!(
            "| {name} | {threads} | {per_sec:.0} | {:.1} |\n",
            1e6 * *threads as f64 / per_sec
        );
    }
    let date = support::run(Command::new("date").arg("-u").arg("+%Y-%m-%d"));
    let out_dir = support::root().join("bench/results").join(date.trim());
    std::fs::create_dir_all(&out_dir).expect("results dir");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report =
        format!(
        "# Transform throughput\n\n{cores} cores visible, best of {ROUNDS} x {secs} s per row, \
         load average before the last row {}, \
         `cargo run --release -p mlserve-features --example transform_bench`.\n\n{table}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    std::fs::write(out_dir.join("transforms.md"), &report).expect("write results");
    print!("{table}");
    println!("written to {}", out_dir.join("transforms.md").display());
    let _ = std::fs::remove_dir_all(&dir);
}
