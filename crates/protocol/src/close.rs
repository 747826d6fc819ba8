//! The one table of WebSocket close codes Herald sends, and what each asks of the client.
//!
//! Every place in the gateway that ends a connection picks a [`CloseCode`];
//! nothing else invents a number. `docs/protocol.md` prints this same table,
//! and clients decide whether to reconnect from [`CloseCode::advice`], so the
//! server and the client can never disagree about a code.

use std::fmt;

/// What a client should do after the server closed its connection with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectAdvice {
    /// Reconnect now, ideally to another instance: nothing is wrong with the client.
    ReconnectNow,
    /// Reconnect after an exponential backoff with jitter: something is temporarily wrong.
    ReconnectWithBackoff,
    /// Do not reconnect: the client must change what it does first.
    Stop,
}

/// A close code Herald sends, with its reason text and its [`ReconnectAdvice`].
///
/// Standard codes (RFC 6455, section 7.4.1) are used where one fits; Herald's
/// own codes live in the 4000–4999 range that RFC reserves for applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the instance is shutting down or restarting.
    GoingAway,
    /// 1003: the client sent a kind of frame this endpoint does not take (binary on a text protocol).
    UnsupportedData,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1009: a client frame was larger than the configured limit.
    MessageTooBig,
    /// 1011: an unexpected server error. Herald does not send it today; it is in the
    /// table because proxies and failing servers send it, and clients must know what to do.
    InternalError,
    /// 1002: the client broke the WebSocket protocol itself (bad framing, unmasked frames).
    ProtocolError,
    /// 4000: the client did not read fast enough and its outbound queue overflowed.
    SlowConsumer,
    /// 4001: the client did not answer the server's pings in time.
    PingTimeout,
    /// 4002: a frame could not be decoded as a Herald protocol frame.
    BadFrame,
    /// 4003: the instance is at its connection limit.
    TooManyConnections,
    /// 4004: the token is malformed, wrongly signed or of a wrong algorithm.
    Unauthorized,
    /// 4005: the token's `exp` has passed.
    TokenExpired,
    /// 4006: the client sent frames faster than allowed.
    TooManyRequests,
    /// 4007: the gateway waited for an `auth` frame (no token in the request, no public
    /// channel) and none came within `--auth-timeout`.
    AuthTimeout,
}

impl CloseCode {
    /// Every code, in the order `docs/protocol.md` lists them.
    pub const ALL: [CloseCode; 14] = [
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::SlowConsumer,
        CloseCode::PingTimeout,
        CloseCode::BadFrame,
        CloseCode::TooManyConnections,
        CloseCode::Unauthorized,
        CloseCode::TokenExpired,
        CloseCode::TooManyRequests,
        CloseCode::AuthTimeout,
    ];

    /// The number sent in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::UnsupportedData => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::SlowConsumer => 4000,
            CloseCode::PingTimeout => 4001,
            CloseCode::BadFrame => 4002,
            CloseCode::TooManyConnections => 4003,
            CloseCode::Unauthorized => 4004,
            CloseCode::TokenExpired => 4005,
            CloseCode::TooManyRequests => 4006,
            CloseCode::AuthTimeout => 4007,
        }
    }

    /// The short, stable reason text sent with the code (well under the 123-byte limit).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::UnsupportedData => "unsupported frame type",
            CloseCode::InvalidPayload => "text frame is not valid utf-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::PingTimeout => "ping timeout",
            CloseCode::BadFrame => "bad frame",
            CloseCode::TooManyConnections => "too many connections",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token expired",
            CloseCode::TooManyRequests => "too many requests",
            CloseCode::AuthTimeout => "auth timeout",
        }
    }

    /// What a client must do next.
    pub const fn advice(self) -> ReconnectAdvice {
        match self {
            // Another instance (or this one, restarted) will take the client at once.
            // A fresh token is all an expired client needs.
            CloseCode::GoingAway | CloseCode::SlowConsumer | CloseCode::TokenExpired => {
                ReconnectAdvice::ReconnectNow
            }
            CloseCode::PingTimeout
            | CloseCode::InternalError
            | CloseCode::TooManyConnections
            | CloseCode::TooManyRequests
            // A client that knows the protocol sends `auth` at once; a late one was stalled.
            | CloseCode::AuthTimeout => ReconnectAdvice::ReconnectWithBackoff,
            // The same client would send the same thing again.
            CloseCode::ProtocolError
            | CloseCode::UnsupportedData
            | CloseCode::InvalidPayload
            | CloseCode::MessageTooBig
            | CloseCode::BadFrame
            | CloseCode::Unauthorized => ReconnectAdvice::Stop,
        }
    }

    /// Looks a received number up in the table.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_unique() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
            assert!(
                code.reason().len() <= 123,
                "close reasons must fit a control frame"
            );
        }
        let mut numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), CloseCode::ALL.len());
    }

    #[test]
    fn a_slow_consumer_may_come_back_at_once_but_a_bad_frame_may_not() {
        assert_eq!(
            CloseCode::SlowConsumer.advice(),
            ReconnectAdvice::ReconnectNow
        );
        assert_eq!(CloseCode::BadFrame.advice(), ReconnectAdvice::Stop);
    }
}
