//! The example binaries as black boxes: spawn them, read `listening on ADDR`, talk
//! to them over loopback TCP with plain std sockets, signal them, check what they
//! print and how they exit. Every wait is bounded, and a child still running when a
//! test ends (failed or not) is killed.
#![cfg(unix)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::certificate::Certificate;
use common::{Proc, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_echo_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_echo_client");

/// Starts `echo_server --listen 127.0.0.1:0 ARGS` and parses its first line.
fn start_server(args: &[&str]) -> (Proc, SocketAddr) {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Proc::spawn(SERVER, &all, None);
    let addr = server.listening();
    (server, addr)
}

/// Starts `echo_client --connect ADDR ARGS` with `stdin`.
fn start_client(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Proc {
    let addr = addr.to_string();
    let mut all = vec!["--connect", &addr];
    all.extend_from_slice(args);
    Proc::spawn(CLIENT, &all, Some(stdin))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Reads exactly `expected.len()` bytes and compares them.
fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// Reads until the server closes (EOF or reset); returns what came before.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return got
            }
            Err(err) => panic!("server did not close within {TIMEOUT:?}: {err}"),
        }
    }
}

/// A loopback address where nobody listens (bound, then freed).
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn echoes_lines_byte_exact_and_strips_crlf() {
    let (_server, addr) = start_server(&[]);
    let mut stream = connect(addr);
    stream
        .write_all(b"hello\r\nworld\n\n\xff\x00\tbin\n")
        .unwrap();
    expect_bytes(&mut stream, b"hello\nworld\n\n\xff\x00\tbin\n");
}

#[test]
fn echoes_a_frame_ending_in_cr_byte_exact_and_counts_it() {
    let (mut server, addr) = start_server(&[]);
    let mut stream = connect(addr);
    // The frame "a\r" (one '\r' of "\r\r\n" is the CRLF's) comes back as it came.
    stream.write_all(b"a\r\r\nnext\n").unwrap();
    expect_bytes(&mut stream, b"a\r\r\nnext\n");
    drop(stream);
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(TIMEOUT).code(), Some(0));
    let stderr = server.stderr();
    assert!(
        stderr.contains("frames received 2, echoed 2, errors 0"),
        "{stderr}"
    );
}

#[test]
fn help_shows_the_default_of_every_timeout() {
    for (bin, flags) in [
        (
            SERVER,
            &[
                ("--read-timeout", "300"),
                ("--frame-timeout", "60"),
                ("--write-timeout", "60"),
                ("--handshake-timeout", "10"),
                ("--max-handshakes", "1024"),
            ][..],
        ),
        (
            CLIENT,
            &[
                ("--read-timeout", "300"),
                ("--frame-timeout", "60"),
                ("--write-timeout", "60"),
            ][..],
        ),
    ] {
        let mut help = Proc::spawn(bin, &["--help"], None);
        assert_eq!(help.wait_exit(TIMEOUT).code(), Some(0));
        let text = String::from_utf8(help.stdout()).unwrap();
        for (flag, default) in flags {
            let line = text
                .lines()
                .find(|line| line.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{bin}: no {flag} in\n{text}"));
            assert!(line.ends_with(&format!("[default: {default}]")), "{line}");
        }
    }
}

#[test]
fn timeouts_of_zero_are_off() {
    let flags = [
        "--read-timeout",
        "0",
        "--frame-timeout",
        "0",
        "--write-timeout",
        "0",
    ];
    let (_server, addr) = start_server(&flags);
    let mut client = start_client(addr, &flags, b"still\n");
    assert_eq!(
        client.wait_exit(TIMEOUT).code(),
        Some(0),
        "{}",
        client.stderr()
    );
    assert_eq!(client.stdout(), b"still\n");
}

#[test]
fn echoes_with_a_custom_delimiter() {
    let (_server, addr) = start_server(&["--delim", ";"]);
    let mut stream = connect(addr);
    stream.write_all(b"a;b\nc;;").unwrap();
    expect_bytes(&mut stream, b"a;b\nc;;");
}

#[test]
fn accepts_backslash_n_written_out_as_the_delimiter() {
    let (_server, addr) = start_server(&["--delim", r"\n"]);
    let mut stream = connect(addr);
    stream.write_all(b"x\r\n").unwrap();
    expect_bytes(&mut stream, b"x\n");
}

#[test]
fn eof_mode_echoes_the_whole_message_then_closes() {
    let (_server, addr) = start_server(&["--delim", "eof"]);
    let mut stream = connect(addr);
    let message = b"line one\nline two\r\n\0 and no delimiter at the end";
    stream.write_all(message).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut stream), message);
}

#[test]
fn oversized_frame_closes_the_connection_and_names_the_peer() {
    let (server, addr) = start_server(&["--max-frame", "8"]);
    let mut stream = connect(addr);
    let peer = stream.local_addr().unwrap();
    // Exactly the limit passes; one byte more closes the connection.
    stream.write_all(b"12345678\n123456789\nlost\n").unwrap();
    assert_eq!(read_until_closed(&mut stream), b"12345678\n");
    server.wait_stderr(&format!("{peer} sent a frame longer than 8 bytes"));
}

#[test]
fn read_timeout_closes_an_idle_connection() {
    let (server, addr) = start_server(&["--read-timeout", "0.3"]);
    let mut stream = connect(addr);
    let peer = stream.local_addr().unwrap();
    // Before the write, so before the server's last read restarts its idle clock:
    // the close cannot come sooner than the timeout after this (a later one is
    // load, not a bug).
    let idle_since = Instant::now();
    stream.write_all(b"ping\n").unwrap();
    expect_bytes(&mut stream, b"ping\n");
    assert_eq!(read_until_closed(&mut stream), b"");
    assert!(idle_since.elapsed() >= Duration::from_millis(300));
    server.wait_stderr(&format!("{peer} sent nothing for 300ms"));
}

#[test]
fn min_receive_rate_closes_a_client_trickling_complete_frames() {
    let (server, addr) = start_server(&["--min-receive-rate", "64/0.5"]);
    let mut stream = connect(addr);
    let peer = stream.local_addr().unwrap();
    // Bounded: 400 frames of 2 bytes, 50 ms apart (20 s); the server's first window
    // ends after 0.5 s with about 20 bytes in it.
    let mut echoed = 0;
    for _ in 0..400 {
        if stream.write_all(b"a\n").is_err() {
            break;
        }
        let mut echo = [0; 2];
        if stream.read_exact(&mut echo).is_err() {
            break;
        }
        echoed += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(echoed < 400, "still served after 400 frames");
    server.wait_stderr(&format!("{peer} sent only "));
    server.wait_stderr("below the minimum of 64");
}

#[test]
fn max_connections_refuses_the_extra_one_only() {
    let (server, addr) = start_server(&["--max-connections", "1"]);
    let mut first = connect(addr);
    first.write_all(b"one\n").unwrap();
    expect_bytes(&mut first, b"one\n"); // admitted and served

    let mut second = connect(addr);
    let refused = second.local_addr().unwrap();
    assert_eq!(read_until_closed(&mut second), b"");
    server.wait_stderr(&format!("refused {refused}: 1 connections already open"));

    first.write_all(b"still here\n").unwrap();
    expect_bytes(&mut first, b"still here\n");
}

#[test]
fn sigint_shuts_down_gracefully_with_exit_code_0() {
    let (mut server, addr) = start_server(&[]);
    let mut stream = connect(addr);
    stream.write_all(b"before\n").unwrap();
    expect_bytes(&mut stream, b"before\n");

    server.signal(libc::SIGINT);
    // The server closes its side; we close ours and it is done.
    assert_eq!(read_until_closed(&mut stream), b"");
    drop(stream);
    let status = server.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    let stderr = server.stderr();
    assert!(
        stderr.contains("shut down on SIGINT: connections accepted 1, refused 0, frames received 1, echoed 1, errors 0; at shutdown drained 1, forced 0"),
        "{stderr}"
    );
    // The port is free again.
    TcpListener::bind(addr).unwrap();
}

#[test]
fn sigterm_shuts_down_with_exit_code_0() {
    let (mut server, _addr) = start_server(&[]);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    assert!(server.stderr().contains("shut down on SIGTERM"));
}

#[test]
fn server_bind_error_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = Proc::spawn(SERVER, &["--listen", &addr], None);
    let status = server.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1));
    let stderr = server.stderr();
    assert!(
        stderr.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn bad_delimiter_is_a_usage_error() {
    let mut server = Proc::spawn(SERVER, &["--delim", "ab"], None);
    assert_eq!(server.wait_exit(TIMEOUT).code(), Some(2));
    assert!(server.stderr().contains("--delim"));
}

#[test]
fn client_sends_stdin_lines_and_prints_replies() {
    let (_server, addr) = start_server(&[]);
    let addr = addr.to_string();
    let mut client = Proc::spawn(
        CLIENT,
        &["--connect", &addr],
        Some(b"one\r\ntwo\n\nlast without newline"),
    );
    let status = client.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr: {}", client.stderr());
    assert_eq!(
        String::from_utf8_lossy(&client.stdout()),
        "one\ntwo\n\nlast without newline\n"
    );
}

#[test]
fn client_in_eof_mode_sends_stdin_as_one_message() {
    let (_server, addr) = start_server(&["--delim", "eof"]);
    let addr = addr.to_string();
    let message = b"first\r\nsecond\n";
    let mut client = Proc::spawn(
        CLIENT,
        &["--connect", &addr, "--delim", "eof"],
        Some(message),
    );
    let status = client.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr: {}", client.stderr());
    assert_eq!(client.stdout(), message);
}

#[test]
fn client_and_server_carry_a_message_larger_than_their_queues_in_eof_mode() {
    // 1 MB: four times the engine's default outbound bound, in one frame.
    let message: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (_server, addr) = start_server(&["--delim", "eof", "--max-frame", "1000000"]);
    let addr = addr.to_string();
    let args = [
        "--connect",
        &addr,
        "--delim",
        "eof",
        "--max-frame",
        "1000000",
    ];
    let mut client = Proc::spawn(CLIENT, &args, Some(&message));
    let status = client.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "stderr: {}", client.stderr());
    assert!(client.stdout() == message, "the echo differs");
}

#[test]
fn client_streams_an_eof_message_of_exactly_its_limit() {
    let message: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
    let (_server, addr) = start_server(&["--delim", "eof"]);
    let mut client = start_client(addr, &["--delim", "eof"], &message);
    assert_eq!(
        client.wait_exit(TIMEOUT).code(),
        Some(0),
        "{}",
        client.stderr()
    );
    assert!(client.stdout() == message, "the echo differs");
}

/// 100 000 bytes in EOF mode against the default 64 KiB limit: the client refuses
/// the message as a whole (not each 64 KiB piece), says so, exits 1, and resets the
/// connection, so the server never takes the part sent for the whole message.
#[test]
fn client_refuses_an_eof_message_over_its_limit_and_resets_the_connection() {
    let message = vec![b'z'; 100_000];
    let (mut server, addr) = start_server(&["--delim", "eof", "--max-frame", "1000000"]);
    let mut client = start_client(addr, &["--delim", "eof"], &message);
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    assert_eq!(
        client.stderr(),
        format!(
            "error: the message on stdin is longer than the 65536-byte frame limit \
             (--max-frame): connection to {addr} reset, nothing delivered\n"
        )
    );
    assert!(client.stdout().is_empty());
    server.wait_stderr("Connection reset by peer");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(TIMEOUT).code(), Some(0));
    let stderr = server.stderr();
    assert!(stderr.contains("frames received 0, echoed 0"), "{stderr}");
}

/// The same message over a Unix socket, which has no reset: refused before any of
/// it is sent.
#[test]
fn client_refuses_an_eof_message_over_its_limit_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("chitchat-eof-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let path = path.to_str().unwrap().to_owned();
    let server = Proc::spawn(SERVER, &["--unix", &path, "--delim", "eof"], None);
    server.first_line();
    let message = vec![b'z'; 100_000];
    let mut client = Proc::spawn(CLIENT, &["--unix", &path, "--delim", "eof"], Some(&message));
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    assert_eq!(
        client.stderr(),
        "error: the message on stdin is longer than the 65536-byte frame limit \
         (--max-frame): not sent\n"
    );
    let mut ok = Proc::spawn(CLIENT, &["--unix", &path, "--delim", "eof"], Some(b"fits"));
    assert_eq!(ok.wait_exit(TIMEOUT).code(), Some(0), "{}", ok.stderr());
    assert_eq!(ok.stdout(), b"fits");
    assert!(!server.stderr().contains("error"), "{}", server.stderr());
}

/// A message the client allows but the server refuses (over the server's limit):
/// the client says the server refused it and exits 1, instead of printing nothing
/// and exiting 0.
#[test]
fn client_reports_an_eof_message_the_server_refuses() {
    let message = vec![b'z'; 100_000];
    let (_server, addr) = start_server(&["--delim", "eof"]);
    let args = ["--delim", "eof", "--max-frame", "1000000"];
    let mut client = start_client(addr, &args, &message);
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    let stderr = client.stderr();
    assert!(
        stderr.starts_with(&format!("error: {addr} closed the connection "))
            && stderr.contains("refused it (longer than its frame limit?)"),
        "{stderr}"
    );
    assert!(client.stdout().is_empty());
}

#[test]
fn client_refuses_a_line_holding_the_delimiter() {
    let (_server, addr) = start_server(&["--delim", ";"]);
    let addr = addr.to_string();
    let mut client = Proc::spawn(
        CLIENT,
        &["--connect", &addr, "--delim", ";"],
        Some(b"a;b\n"),
    );
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    let stderr = client.stderr();
    assert!(
        stderr.starts_with(&format!("error: cannot send to {addr}: ")),
        "{stderr}"
    );
}

#[test]
fn client_reports_a_refused_connection_with_the_address() {
    let addr = closed_port().to_string();
    let mut client = Proc::spawn(CLIENT, &["--connect", &addr], Some(b"hello\n"));
    let status = client.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1));
    let stderr = client.stderr();
    assert_eq!(stderr, format!("error: connection to {addr} refused\n"));
    assert!(client.stdout().is_empty());
}

#[test]
fn serves_and_connects_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("chitchat-echo-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let path_text = path.to_str().unwrap().to_owned();
    let mut server = Proc::spawn(SERVER, &["--unix", &path_text], None);
    assert_eq!(
        server.first_line(),
        format!("listening on unix:{path_text}")
    );

    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"over unix\r\n").unwrap();
    let mut echoed = [0; 10];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"over unix\n");
    drop(stream);

    let mut client = Proc::spawn(CLIENT, &["--unix", &path_text], Some(b"a\nb\n"));
    assert_eq!(
        client.wait_exit(TIMEOUT).code(),
        Some(0),
        "{}",
        client.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&client.stdout()), "a\nb\n");

    server.signal(libc::SIGINT);
    assert_eq!(
        server.wait_exit(TIMEOUT).code(),
        Some(0),
        "{}",
        server.stderr()
    );
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[test]
fn serves_and_connects_over_tls() {
    let cert = Certificate::new("echo");
    let (_server, addr) = start_server(&cert.server_args());
    let mut client = start_client(addr, &cert.client_args(), b"secret\r\nmore\n");
    assert_eq!(
        client.wait_exit(TIMEOUT).code(),
        Some(0),
        "{}",
        client.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&client.stdout()), "secret\nmore\n");

    // Plain TCP gets no echo from a TLS server: the bytes are not a handshake.
    let mut plain = connect(addr);
    plain.write_all(b"hello\n").unwrap();
    assert!(!read_until_closed(&mut plain).starts_with(b"hello"));
}

#[test]
fn frame_timeout_closes_a_client_that_trickles_a_frame() {
    let (server, addr) = start_server(&["--read-timeout", "1", "--frame-timeout", "1.5"]);
    let mut stream = connect(addr);
    // Before the first byte, so before the server's frame clock starts.
    let started = Instant::now();
    // One byte every 100 ms keeps the 1 s read timeout away (with 900 ms to spare
    // for a loaded machine) but never ends the frame; bounded at 10 s of bytes.
    let mut closed = false;
    for _ in 0..100 {
        if stream.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(closed, "the server never closed the trickling client");
    let stderr = server.wait_stderr("to finish a frame");
    assert!(
        stderr.contains(&stream.local_addr().unwrap().to_string()),
        "{stderr}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before the frame timeout",
        started.elapsed()
    );
}
