//! The suite's harness for Unix domain sockets.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chitchat_core::{Addr, BindOptions, Binder, Connector};
use chitchat_tokio::{Unix, UnixConn};

use crate::harness::Harness;

/// Runs the suite over Unix domain sockets, each server on a fresh path in the
/// temporary directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnixHarness;

impl Harness for UnixHarness {
    type Binder = Unix;
    type Connector = Unix;

    fn server_addr(&self) -> Addr {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "chitchat-conformance-{}-{n}.sock",
            std::process::id()
        ));
        // Ours by name: a file left by an earlier process with the same pid goes.
        let _ = std::fs::remove_file(&path);
        format!("unix:{}", path.display())
            .parse()
            .expect("a short temporary path")
    }

    fn binder(&self) -> &Unix {
        &Unix
    }

    fn connector(&self) -> &Unix {
        &Unix
    }

    /// A listener that never accepts, its backlog full: connects wait until their
    /// timeout.
    async fn black_hole(&self) -> (Addr, Box<dyn Any + Send>) {
        let addr = self.server_addr();
        let mut options = BindOptions::default();
        options.backlog = 0;
        let listener = Unix.bind(&addr, &options).expect("bind");
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(100), Unix.connect(&addr)).await {
                Ok(Ok(conn)) => fillers.push(conn),
                _ => break,
            }
        }
        let guard: Box<dyn Any + Send> = Box::new((listener, fillers));
        (addr, guard)
    }

    /// Unix sockets have no reset to send.
    fn abort(&self, conn: UnixConn) -> bool {
        drop(conn);
        false
    }
}
