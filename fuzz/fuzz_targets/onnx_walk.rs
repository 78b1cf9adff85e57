//! The registry's ONNX walker (`onnx.rs`) and the upload inspector's header
//! checks (`inspect.rs`): an uploaded `model.onnx` is walked as a protobuf
//! `ModelProto` without being loaded, for its IR version and external-data
//! locations. Checked: no panic; the walk's outcome is the same whether the
//! reader hands over the whole file or a few bytes at a time (as upload
//! chunks arrive).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use mlserve_registry::{inspect, onnx};

/// A reader that returns at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = inspect::check_head("model.onnx", data);
    let whole = onnx::walk(data);
    let step = 1 + data.len() % 7;
    let trickled = onnx::walk(Trickle { data, step });
    match (&whole, &trickled) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("whole: {whole:?}, {step} bytes at a time: {trickled:?}"),
    }
});
