//! Command-line helpers shared by the example binaries (`src/bin/`) and the
//! project's tools (`chitchat-tools`), so that `--delim`, the seconds flags and the
//! timeout flags (where `0` means none) read
//! the same in every one of them, and errors end them the same way.
//!
//! ```
//! use chitchat_core::{Delimiter, ReceiveRate};
//! use chitchat_examples::{parse_delimiter, parse_secs};
//!
//! assert_eq!(parse_delimiter("eof"), Ok(Delimiter::Eof));
//! assert_eq!(parse_secs("1.5"), Ok(std::time::Duration::from_millis(1500)));
//! ```
#![deny(missing_docs)]

pub mod chat;

use std::process::ExitCode;
use std::time::Duration;

use chitchat_core::{Delimiter, ReceiveRate};

/// Parses a `--delim` value: one ASCII character (`;`, `|`...), the escapes `\n`,
/// `\r`, `\t` and `\0` (NUL-terminated frames) written as two characters, or `0` /
/// `eof` for EOF mode (the Go library's delimiter 0: a frame is everything the peer
/// sends before it shuts down its write side).
///
/// ```
/// use chitchat_core::Delimiter;
/// use chitchat_examples::parse_delimiter;
///
/// assert_eq!(parse_delimiter(r"\n"), Ok(Delimiter::Byte(b'\n')));
/// assert_eq!(parse_delimiter(";"), Ok(Delimiter::Byte(b';')));
/// assert_eq!(parse_delimiter("eof"), Ok(Delimiter::Eof));
/// assert!(parse_delimiter("ab").is_err());
/// ```
///
/// # Errors
/// A message for clap when the text is none of the above.
pub fn parse_delimiter(text: &str) -> Result<Delimiter, String> {
    match text {
        "0" | "eof" | "EOF" => Ok(Delimiter::Eof),
        r"\n" => Ok(Delimiter::Byte(b'\n')),
        r"\r" => Ok(Delimiter::Byte(b'\r')),
        r"\t" => Ok(Delimiter::Byte(b'\t')),
        r"\0" => Ok(Delimiter::Byte(0)),
        // One byte: an ASCII character (`len` counts bytes, so `é` is refused).
        _ if text.len() == 1 => Ok(Delimiter::Byte(text.as_bytes()[0])),
        _ => Err(format!(
            r"expected one ASCII character, \n, \r, \t, \0, or 0/eof; got {text:?}"
        )),
    }
}

/// Parses a duration given in seconds, fractions allowed: `2`, `0.25`.
///
/// ```
/// use chitchat_examples::parse_secs;
/// use std::time::Duration;
///
/// assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
/// assert!(parse_secs("0").is_err());
/// ```
///
/// # Errors
/// A message for clap unless the text is a positive, finite number.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        // Refuses negative, NaN and infinite values; zero is refused below.
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| {
            format!("expected a positive number of seconds, e.g. 2 or 0.5; got {text:?}")
        })
}

/// Parses a minimum receive rate, `BYTES/SECS`: at least BYTES in every SECS-long
/// window in which the peer sends anything.
///
/// ```
/// use chitchat_core::ReceiveRate;
/// use chitchat_examples::parse_receive_rate;
/// use std::time::Duration;
///
/// assert_eq!(parse_receive_rate("64/10"), Ok(ReceiveRate::new(64, Duration::from_secs(10))));
/// assert!(parse_receive_rate("64").is_err());
/// ```
///
/// # Errors
/// A message for clap unless the text is a byte count, `/`, and positive seconds.
pub fn parse_receive_rate(text: &str) -> Result<ReceiveRate, String> {
    let parsed = text.split_once('/').and_then(|(bytes, secs)| {
        let bytes = bytes.trim().parse::<u64>().ok()?;
        let per = parse_secs(secs.trim()).ok()?;
        Some(ReceiveRate::new(bytes, per))
    });
    parsed.ok_or_else(|| format!("expected BYTES/SECS, e.g. 64/10; got {text:?}"))
}

/// The value of a timeout flag: a duration, or `None` for off (written `0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// Parses a timeout flag: seconds as for [`parse_secs`], or `0` to turn the
/// timeout off.
///
/// ```
/// use chitchat_examples::{parse_timeout, Timeout};
/// use std::time::Duration;
///
/// assert_eq!(parse_timeout("300"), Ok(Timeout(Some(Duration::from_secs(300)))));
/// assert_eq!(parse_timeout("0"), Ok(Timeout(None)));
/// ```
///
/// # Errors
/// A message for clap unless the text is `0` or a positive, finite number.
pub fn parse_timeout(text: &str) -> Result<Timeout, String> {
    if text.parse::<f64>() == Ok(0.0) {
        return Ok(Timeout(None));
    }
    parse_secs(text)
        .map(|secs| Timeout(Some(secs)))
        .map_err(|_| {
            format!("expected a number of seconds, e.g. 2 or 0.5, or 0 for none; got {text:?}")
        })
}

/// The timeout flags of `echo_server` and `echo_client`, each on by default with
/// the library's value for a server (`0` turns one off).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct TimeoutFlags {
    /// Close the connection when the peer sends nothing for this long (restarts on
    /// every read); 0: never.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_timeout)]
    pub read_timeout: Timeout,

    /// Close the connection when a frame from the peer, once begun, is not finished
    /// within this long (a peer trickling bytes just inside the read timeout); 0: no
    /// limit.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
    pub frame_timeout: Timeout,

    /// Drop the peer when it takes none of our output for this long; 0: never.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
    pub write_timeout: Timeout,
}

/// Sends the library's `tracing` output to stderr, filtered by `RUST_LOG` (e.g.
/// `RUST_LOG=chitchat_tokio=debug` shows every accept and close). Silent when
/// `RUST_LOG` is unset: the binaries report errors themselves.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Installs the handlers for SIGINT and SIGTERM now (so that a signal sent as soon
/// as a binary prints `listening on` is caught) and returns a future that resolves
/// to the name of the first one received.
///
/// # Errors
/// When the handlers cannot be installed.
#[cfg(unix)]
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// Ctrl-C only, where there is no SIGTERM.
///
/// # Errors
/// Never; the signature matches the Unix one.
#[cfg(not(unix))]
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    })
}

/// Ends a binary's `main`: an error becomes one `error: ...` line on stderr and
/// exit code 1, whatever `RUST_BACKTRACE` says.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|err| {
        eprintln!("error: {}", describe(&err));
        ExitCode::FAILURE
    })
}

/// An error and its causes as one line, `: `-separated, each said once: chitchat's
/// errors name their cause in their own message already, context added with anyhow
/// does not.
///
/// ```
/// let addr = "127.0.0.1:1".parse().unwrap();
/// let source = std::io::Error::other("address in use");
/// let err = anyhow::Error::new(chitchat_core::BindError::Io { addr, source });
/// let err = err.context("starting the echo server");
/// assert_eq!(
///     chitchat_examples::describe(&err),
///     "starting the echo server: cannot listen on 127.0.0.1:1: address in use"
/// );
/// ```
pub fn describe(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_accepts_characters_escapes_and_eof() {
        assert_eq!(parse_delimiter("\n"), Ok(Delimiter::Byte(b'\n')));
        assert_eq!(parse_delimiter(r"\n"), Ok(Delimiter::Byte(b'\n')));
        assert_eq!(parse_delimiter(r"\0"), Ok(Delimiter::Byte(0)));
        assert_eq!(parse_delimiter("|"), Ok(Delimiter::Byte(b'|')));
        assert_eq!(parse_delimiter("0"), Ok(Delimiter::Eof));
        assert_eq!(parse_delimiter("eof"), Ok(Delimiter::Eof));
    }

    #[test]
    fn delimiter_refuses_more_than_one_byte() {
        for text in ["", "ab", "é", r"\x"] {
            assert!(parse_delimiter(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn chitchat_errors_print_their_cause_once() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let source = std::io::Error::other("address in use");
        let err = anyhow::Error::new(chitchat_core::BindError::Io { addr, source });
        assert_eq!(
            describe(&err),
            "cannot listen on 127.0.0.1:1: address in use"
        );
    }

    #[test]
    fn timeouts_take_seconds_or_zero_for_none() {
        assert_eq!(
            parse_timeout("0.5"),
            Ok(Timeout(Some(Duration::from_millis(500))))
        );
        assert_eq!(parse_timeout("0"), Ok(Timeout(None)));
        assert_eq!(parse_timeout("0.0"), Ok(Timeout(None)));
        for text in ["-1", "NaN", "inf", "never", ""] {
            assert!(parse_timeout(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn secs_refuse_zero_negative_and_junk() {
        assert_eq!(parse_secs("3"), Ok(Duration::from_secs(3)));
        for text in ["0", "-1", "NaN", "inf", "soon", ""] {
            assert!(parse_secs(text).is_err(), "{text:?}");
        }
    }
}
