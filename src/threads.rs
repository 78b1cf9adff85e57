//! How many threads a server process starts, from what it runs.
//!
//! ONNX Runtime gets every core by default: a compute-bound model (ResNet-50,
//! BERT) is then as fast as raw ONNX Runtime with all cores, and its pool
//! sleeps between batches (spinning is off), so the I/O threads lose nothing
//! when models are light. Tokio gets half the cores when the process serves
//! models (a request-bound model needs them for parsing and writing), and
//! every core when it does not (a gateway, registry or feature-store pod).
//! HTTP/1.1 connections get threads of their own in a process that serves
//! models ([`super::serve`]'s HTTP I/O threads): half the cores, at least
//! two, so the REST path has more than one core without moving gRPC, whose
//! one connection per client is fastest on few tokio workers.

use std::num::NonZeroUsize;

use mlserve_common::Role;

/// The thread counts of one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPlan {
    /// Tokio worker threads.
    pub tokio_workers: usize,
    /// ONNX Runtime's global intra-op pool, the calling thread included.
    pub ort_cores: usize,
    /// Threads serving HTTP/1.1 connections (0: the tokio workers do).
    pub http_io_threads: usize,
}

impl ThreadPlan {
    /// The plan for `roles` on `cores` cores; set values win over defaults.
    pub fn new(
        cores: usize,
        roles: &[Role],
        worker_threads: Option<NonZeroUsize>,
        cpu_threads: Option<NonZeroUsize>,
        http_io_threads: Option<usize>,
    ) -> ThreadPlan {
        let cores = cores.max(1);
        let serves_models = roles.contains(&Role::Inference);
        let default_workers = if serves_models {
            (cores / 2).max(1)
        } else {
            cores
        };
        let default_http_io = if serves_models && cores >= 2 {
            (cores / 2).max(2)
        } else {
            0
        };
        ThreadPlan {
            tokio_workers: worker_threads.map_or(default_workers, NonZeroUsize::get),
            ort_cores: cpu_threads.map_or(cores, NonZeroUsize::get),
            http_io_threads: http_io_threads.unwrap_or(default_http_io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(v)
    }

    #[test]
    fn model_serving_processes_give_onnx_runtime_every_core() {
        let all = [Role::Gateway, Role::Inference, Role::Registry];
        assert_eq!(
            ThreadPlan::new(2, &all, None, None, None),
            ThreadPlan {
                tokio_workers: 1,
                ort_cores: 2,
                http_io_threads: 2
            }
        );
        assert_eq!(
            ThreadPlan::new(16, &[Role::Inference], None, None, None),
            ThreadPlan {
                tokio_workers: 8,
                ort_cores: 16,
                http_io_threads: 8
            }
        );
        let one_core = ThreadPlan::new(1, &all, None, None, None);
        assert_eq!((one_core.tokio_workers, one_core.http_io_threads), (1, 0));
    }

    #[test]
    fn processes_without_models_give_tokio_every_core() {
        let plan = ThreadPlan::new(4, &[Role::Gateway, Role::Features], None, None, None);
        assert_eq!((plan.tokio_workers, plan.http_io_threads), (4, 0));
    }

    #[test]
    fn configured_counts_win() {
        let plan = ThreadPlan::new(8, &[Role::Inference], n(3), n(5), Some(0));
        assert_eq!(
            plan,
            ThreadPlan {
                tokio_workers: 3,
                ort_cores: 5,
                http_io_threads: 0
            }
        );
    }
}
