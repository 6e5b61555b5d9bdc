//! Setters that server and client builders share: both configure one connection the
//! same way, so the setters are written once.

/// Expands to the per-connection setters of a builder whose `config` has a `conn`
/// field of type `ConnConfig`.
macro_rules! conn_setters {
    () => {
        /// Where frames end (default `\n`).
        pub fn delimiter(mut self, delimiter: chitchat_core::Delimiter) -> Self {
            self.config.conn.frame.delimiter = delimiter;
            self
        }

        /// Largest frame in either direction (default 64 KiB).
        pub fn max_frame_len(mut self, len: usize) -> Self {
            self.config.conn.frame.max_frame_len = len;
            self
        }

        /// What an oversized incoming frame costs the connection (default: closed).
        pub fn oversize(mut self, policy: chitchat_core::OversizePolicy) -> Self {
            self.config.conn.oversize = policy;
            self
        }

        /// Close the connection when nothing arrives for this long; `None` waits
        /// forever (see `ConnConfig::idle_timeout` for the default).
        pub fn idle_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.conn.idle_timeout = timeout.into();
            self
        }

        /// Close the connection when a frame, once begun, is not finished within this
        /// time; `None` for no limit (see `ConnConfig::frame_timeout`).
        pub fn frame_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.conn.frame_timeout = timeout.into();
            self
        }

        /// Give up on the peer when queued output makes no progress for this long;
        /// `None` waits forever (see `ConnConfig::write_timeout`).
        pub fn write_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.config.conn.write_timeout = timeout.into();
            self
        }

        /// Bytes queued for the peer before it counts as not reading.
        pub fn max_outbound(mut self, bytes: usize) -> Self {
            self.config.conn.max_outbound = bytes;
            self
        }

        /// How long a closing connection may spend writing out its queue.
        pub fn linger(mut self, linger: std::time::Duration) -> Self {
            self.config.conn.linger = linger;
            self
        }

        /// TCP keepalive on the connection's socket (default: on, see
        /// [`Keepalive`](chitchat_core::Keepalive)); `None` turns it off. Transports
        /// without keepalive ignore it.
        pub fn keepalive(mut self, keepalive: impl Into<Option<chitchat_core::Keepalive>>) -> Self {
            self.config.conn.keepalive = keepalive.into();
            self
        }

        /// Close a peer that sends, but fewer bytes per window than this (default:
        /// off; see `ConnConfig::min_receive_rate` for why).
        pub fn min_receive_rate(
            mut self,
            rate: impl Into<Option<chitchat_core::ReceiveRate>>,
        ) -> Self {
            self.config.conn.min_receive_rate = rate.into();
            self
        }
    };
}

pub(crate) use conn_setters;
