//! Running out of file descriptors, in a test binary of its own: it lowers the process's
//! RLIMIT_NOFILE to 256, which would starve any test running beside it.
//!
//! The server runs out of file descriptors while a peer waits in its backlog: the
//! accept loop must back off (not spin), report each failed attempt, and serve the
//! waiting peer within one back-off period once descriptors are freed.

mod reliability_util;

use std::io;
use std::time::Duration;

use chitchat_core::{ConnError, ConnErrorKind};
use reliability_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// The fd limit of this process during the test.
const LIMIT: u64 = 256;

fn lower_fd_limit(to: u64) {
    let limit = libc::rlimit {
        rlim_cur: to,
        rlim_max: to,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// CPU time of the process so far, without opening a file (there is no fd left).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct we pass and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn is_emfile(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EMFILE)
}

/// With RLIMIT_NOFILE at 256, peers connect until the server cannot accept
/// the next one (EMFILE) and it waits in the backlog.
///
/// Pass: the accept loop backs off: over 4 s at most 12 accept attempts, each
/// reported as one `Accept` error naming the listening address, at most 3 in the
/// last 2 s (about one per second, the longest back-off), and the process uses less
/// than 10% of a core meanwhile (late timers on a loaded machine only lower these
/// counts); once 10 peers leave, the waiting peer is served (how long it waited is
/// reported: the next attempt is due within one back-off period, 1 s, and a later
/// one is load), and new peers are served.
#[test]
fn accept_backs_off_when_out_of_fds_and_serves_again_once_some_are_freed() {
    lower_fd_limit(LIMIT);
    run(|| async {
        let server = echo_server(|b| b).await;
        let addr = inet(&server);
        let recorder = Recorder::start(server.events());
        // Each served peer costs two fds (ours and the server's). Make the count of
        // open fds odd, so that the last fd goes to our end of a connection and the
        // server has none left to accept it.
        let _parity = (open_fds() & 1 == 0).then(|| std::fs::File::open("/dev/null").unwrap());
        let fds_before = open_fds();

        let mut served = Vec::new();
        let waiting = loop {
            assert!(served.len() < LIMIT as usize, "the limit never bit");
            let mut stream = match TcpStream::connect(addr).await {
                Ok(stream) => stream,
                Err(err) if is_emfile(&err) => panic!("out of fds on our side first"),
                Err(err) => panic!("connect: {err}"),
            };
            stream.write_all(b"ping\n").await.unwrap();
            let mut echo = [0u8; 5];
            // Served (the echo), or not accepted because the server is out of fds
            // (its failed accept is reported): whichever comes first, however
            // slowly a loaded machine gets there.
            let out_of_fds = async {
                wait_until("an echo or a failed accept", || {
                    recorder
                        .errors()
                        .iter()
                        .any(|e| e.kind() == ConnErrorKind::Accept)
                })
                .await
            };
            tokio::select! {
                biased;
                read = stream.read_exact(&mut echo) => match read {
                    Ok(_) => served.push(stream),
                    Err(err) => panic!("read: {err}"),
                },
                () = out_of_fds => break stream,
            }
        };
        // Counted, not listed: listing /proc/self/fd would need an fd.
        let fds_in_use = fds_before + 2 * served.len() + 1;

        // Watch the back-off for 4 s from the first failed accept.
        let window = Duration::from_secs(4);
        let accept_failures = || -> Vec<Instant> {
            recorder
                .events()
                .iter()
                .filter(|(_, e)| {
                    e.as_error()
                        .is_some_and(|e| e.kind() == ConnErrorKind::Accept)
                })
                .map(|(at, _)| *at)
                .collect()
        };
        wait_until("a failed accept", || !accept_failures().is_empty()).await;
        let first = accept_failures()[0];
        let began = Instant::now();
        let cpu_before = cpu_time();
        tokio::time::sleep_until(first + window).await;
        let cpu = cpu_time() - cpu_before;
        let cpu_window = began.elapsed();
        let attempts: Vec<Duration> = accept_failures()
            .iter()
            .map(|at| at.duration_since(first))
            .filter(|&at| at < window)
            .collect();
        for err in recorder.errors() {
            match err {
                ConnError::Accept { local, source } => {
                    assert_eq!(local, server.local_addr());
                    assert!(is_emfile(&source), "{source}");
                }
                other => panic!("unexpected {other}"),
            }
        }
        let late = attempts
            .iter()
            .filter(|&&at| at >= window - Duration::from_secs(2))
            .count();

        // Free fds: 10 peers leave; the waiting one must be served within a period.
        let freed_at = Instant::now();
        served.truncate(served.len() - 10);
        let mut waiting = waiting;
        let mut echo = [0u8; 5];
        timeout(PROMPT, waiting.read_exact(&mut echo))
            .await
            .expect("the waiting peer is served")
            .unwrap();
        let served_after = freed_at.elapsed();
        assert_eq!(&echo, b"ping\n");
        let mut fresh = GoodPeer::connect(addr, 1).await.unwrap();
        fresh.rounds(5).await.unwrap();

        figure(
            "out of fds",
            format_args!(
                "RLIMIT_NOFILE {LIMIT}: {} peers served, the next waits in the backlog ({fds_in_use} fds open); \
                 over {window:?} from the first failure: {} accept attempts, each one Accept(EMFILE) error (at {:?}), \
                 {late} in the last 2 s; CPU {cpu:?} in {cpu_window:?}; 10 peers left, the waiting peer was served {served_after:?} later; a new peer echoed 5/5",
                served.len() + 10,
                attempts.len(),
                attempts
                    .iter()
                    .map(|d| format!("{} ms", d.as_millis()))
                    .collect::<Vec<_>>()
            ),
        );
        assert!(!attempts.is_empty(), "the accept failure is reported");
        assert!(
            attempts.len() <= 12,
            "{} accept attempts in {window:?}",
            attempts.len()
        );
        assert!(late <= 3, "{late} attempts in the last 2 s");
        assert!(cpu < cpu_window / 10, "{cpu:?} of CPU in {cpu_window:?}");
        server.cut().await;
    });
}
