//! What frames carry: the requests a client sends ([`ClientFrame`]), the
//! replies and pushed deliveries the broker sends ([`ServerFrame`]), and the
//! protocol's limits.
//!
//! The variant order is the wire format (bincode writes the variant index as
//! a u32): new variants go at the end, existing ones never move.

use bincode::{Decode, Encode};

/// The protocol version a client states in [`ClientFrame::Hello`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Default frame cap of the broker's reads: a publish frame bigger than
/// this is refused (the broker's `[protocol] max_frame` changes it).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Most records in one publish: one request must not monopolise a group
/// commit.
pub const MAX_BATCH_RECORDS: usize = 10_000;

/// Most offsets in one ack or nack: bounds the work one frame causes.
pub const MAX_ACK_OFFSETS: usize = 10_000;

/// Most open subscriptions on one connection: each costs a dispatcher.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// Default credit window a subscription asks for when the caller does not
/// say: enough to keep a fast consumer busy, small enough to bound memory.
pub const DEFAULT_CREDITS: u32 = 256;

/// Default cap the broker puts on a subscription's credit window (the
/// broker's `[protocol] max_credits` changes it): deliveries in flight per
/// subscription are at most this many records.
pub const DEFAULT_MAX_CREDITS: u32 = 1024;

/// Longest client or consumer group name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Request id meaning "about the connection, not one request".
pub const CONNECTION: u64 = 0;

/// A record to publish: the broker adds the timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PublishRecord {
    /// Metadata as ordered (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// MIME type of `payload` (`x-application/hl7-v2+er7`, `application/fhir+json`, …).
    pub content_type: String,
    /// The bytes to store.
    pub payload: Vec<u8>,
}

/// A stored record, as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Record {
    /// When the broker received it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Metadata as ordered (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// MIME type of `payload`.
    pub content_type: String,
    /// The stored bytes.
    pub payload: Vec<u8>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum StartAt {
    /// The oldest record stored.
    Earliest,
    /// The next record published after subscribing.
    Latest,
    /// This offset (or the oldest stored after it).
    Offset(u64),
    /// The first record received at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// One topic, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Oldest offset stored.
    pub first: Option<u64>,
    /// Newest offset.
    pub last: Option<u64>,
    /// Records stored.
    pub count: u64,
    /// Payload bytes stored.
    pub bytes: u64,
}

/// Client → broker.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ClientFrame {
    /// (0) The first frame of every connection.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u16,
        /// Free text for logs (at most [`MAX_NAME_BYTES`]).
        client_name: String,
        /// The secret whose SHA-256 the broker's `[[clients]]` holds; empty
        /// on a development broker without `[[clients]]`.
        token: String,
    },
    /// (1) Append records to a topic, all or none; answered by
    /// [`ServerFrame::Published`] once they are durable.
    Publish {
        /// Chosen by the client, echoed in the reply; not 0.
        request_id: u64,
        /// Target topic.
        topic: String,
        /// 1 to [`MAX_BATCH_RECORDS`] records.
        records: Vec<PublishRecord>,
    },
    /// (2) Start receiving a topic's records as [`ServerFrame::Deliver`].
    Subscribe {
        /// Echoed in [`ServerFrame::Subscribed`].
        request_id: u64,
        /// Topic to read.
        topic: String,
        /// Consumer group: members share the records and the group's offset
        /// is committed durably by acks. `None`: a private subscription.
        group: Option<String>,
        /// Where to start (a group with a committed offset resumes there).
        start: StartAt,
        /// Most deliveries in flight (delivered, not yet acked or nacked).
        credits: u32,
    },
    /// (3) Stop a subscription; its unacked records go back to the group.
    Unsubscribe {
        /// Echoed in [`ServerFrame::Done`].
        request_id: u64,
        /// From [`ServerFrame::Subscribed`].
        subscription: u64,
    },
    /// (4) Records processed: frees credits; in a group, commits the group's
    /// offset durably before [`ServerFrame::Done`].
    Ack {
        /// Echoed in [`ServerFrame::Done`].
        request_id: u64,
        /// Which subscription delivered them.
        subscription: u64,
        /// Offsets of delivered records (at most [`MAX_ACK_OFFSETS`]).
        offsets: Vec<u64>,
    },
    /// (5) Records not processed: delivered again (in a group, possibly to
    /// another member).
    Nack {
        /// Echoed in [`ServerFrame::Done`].
        request_id: u64,
        /// Which subscription delivered them.
        subscription: u64,
        /// Offsets of delivered records (at most [`MAX_ACK_OFFSETS`]).
        offsets: Vec<u64>,
    },
    /// (6) Which topics exist (those the client may use).
    ListTopics {
        /// Echoed in [`ServerFrame::Topics`].
        request_id: u64,
    },
    /// (7) Liveness check.
    Ping {
        /// Echoed in [`ServerFrame::Pong`].
        request_id: u64,
    },
    /// (8) Admin: run a route, or a destination, again over a range of its
    /// source topic. Needs a client with `admin = true`. Answered with
    /// [`ServerFrame::Replayed`] when the replay is done.
    Replay {
        /// Echoed in the answer.
        request_id: u64,
        /// What to replay.
        target: ReplayTarget,
        /// The route's or destination's name.
        name: String,
        /// First source offset.
        from: u64,
        /// Last source offset (`None`: the end of the topic).
        to: Option<u64>,
    },
    /// (9) Admin: forget a consumer group on a topic — its committed offset
    /// is removed, so it no longer holds retention back (a one-off `tail
    /// --group` would otherwise do so for ever). Refused while the group
    /// has a member connected. Answered with [`ServerFrame::Done`].
    DeleteGroup {
        /// Echoed in the answer.
        request_id: u64,
        /// The group.
        group: String,
        /// The topic it reads.
        topic: String,
    },
}

/// What a [`ClientFrame::Replay`] runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ReplayTarget {
    /// (0) A route: its outputs are written again.
    Route,
    /// (1) A destination: the range is sent to its receiver again.
    Destination,
}

impl ClientFrame {
    /// The request id (0 for Hello).
    pub fn request_id(&self) -> u64 {
        match self {
            ClientFrame::Hello { .. } => CONNECTION,
            ClientFrame::Publish { request_id, .. }
            | ClientFrame::Subscribe { request_id, .. }
            | ClientFrame::Unsubscribe { request_id, .. }
            | ClientFrame::Ack { request_id, .. }
            | ClientFrame::Nack { request_id, .. }
            | ClientFrame::ListTopics { request_id }
            | ClientFrame::Ping { request_id }
            | ClientFrame::Replay { request_id, .. }
            | ClientFrame::DeleteGroup { request_id, .. } => *request_id,
        }
    }
}

/// Broker → client.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ServerFrame {
    /// (0) Hello accepted.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        version: u16,
        /// The broker's name and version, for logs.
        server: String,
        /// The `[[clients]]` name the token belongs to.
        client: String,
        /// The broker's frame cap for frames it reads.
        max_frame: u32,
        /// [`MAX_BATCH_RECORDS`] as the broker applies it.
        max_batch: u32,
        /// Largest credit window the broker grants.
        max_credits: u32,
    },
    /// (1) Records of a publish are durable at these offsets, in order.
    Published {
        /// The publish's id.
        request_id: u64,
        /// One offset per record.
        offsets: Vec<u64>,
    },
    /// (2) A subscription is open; deliveries for it follow.
    Subscribed {
        /// The subscribe's id.
        request_id: u64,
        /// Names the subscription in deliveries, acks and nacks.
        subscription: u64,
        /// The first offset it will deliver (a group's committed offset).
        start_offset: u64,
    },
    /// (3) A record, pushed.
    Deliver {
        /// Which subscription.
        subscription: u64,
        /// The record's offset in the topic.
        offset: u64,
        /// The record.
        record: Record,
    },
    /// (4) An unsubscribe, ack or nack is done (an ack in a group: the
    /// group's offset is durable).
    Done {
        /// The request's id.
        request_id: u64,
    },
    /// (5) The topics the client may use.
    Topics {
        /// The list's id.
        request_id: u64,
        /// One entry per topic, by name.
        topics: Vec<TopicSummary>,
    },
    /// (6) Answer to a ping.
    Pong {
        /// The ping's id.
        request_id: u64,
    },
    /// (7) A request failed ([`CONNECTION`]: the connection did, and the
    /// broker closes it after this frame).
    Error {
        /// The failed request's id, or [`CONNECTION`].
        request_id: u64,
        /// An [`ErrorCode`] number.
        code: u16,
        /// What went wrong, for people.
        message: String,
    },
    /// (8) A replay is done.
    Replayed {
        /// The request's id.
        request_id: u64,
        /// Source records read.
        read: u64,
        /// Records written (route) or delivered (destination).
        written: u64,
        /// Records dead-lettered.
        dead_lettered: u64,
        /// Records the condition filtered out.
        filtered: u64,
    },
}

/// Error codes of [`ServerFrame::Error`]. Numbers are the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The bytes are not a frame or its body is not a message. Closes.
    BadFrame = 1,
    /// The frame's length is over the broker's cap. Closes.
    FrameTooLarge = 2,
    /// Unknown frame or protocol version. Closes.
    UnsupportedVersion = 3,
    /// A request before Hello, or a second Hello. Closes.
    NotAuthenticated = 4,
    /// Unknown token (or a token where none is configured). Closes.
    AuthenticationFailed = 5,
    /// The client's `[[clients]]` patterns do not allow this topic.
    Forbidden = 6,
    /// A request with bad fields (topic name, group name, credits, a batch
    /// over the cap, request id 0).
    InvalidRequest = 7,
    /// No such subscription on this connection.
    UnknownSubscription = 8,
    /// Too many subscriptions, groups or connections.
    LimitReached = 9,
    /// The broker could not store the records: publish again later.
    StorageFailed = 10,
    /// The broker is shutting down or hit an internal fault.
    Unavailable = 11,
}

impl ErrorCode {
    /// Every code, for lookups.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::NotAuthenticated,
        ErrorCode::AuthenticationFailed,
        ErrorCode::Forbidden,
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownSubscription,
        ErrorCode::LimitReached,
        ErrorCode::StorageFailed,
        ErrorCode::Unavailable,
    ];

    /// The wire number.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire number (`None` for codes of a newer broker).
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_u16() == n)
    }
}

/// A record that can write its own wire form — the bytes bincode's
/// `legacy()` config makes of a [`Record`] — without being decoded into one:
/// a broker writes stored records straight into delivery frames this way,
/// instead of decoding and encoding every record for every subscriber.
pub trait WireRecord {
    /// Write the record exactly as `legacy()` bincode encodes a [`Record`].
    fn write_wire(
        &self,
        out: &mut dyn bincode::enc::write::Writer,
    ) -> Result<(), bincode::error::EncodeError>;
}

/// Bytes that already are a [`Record`] as `legacy()` bincode encodes it.
impl WireRecord for Vec<u8> {
    fn write_wire(
        &self,
        out: &mut dyn bincode::enc::write::Writer,
    ) -> Result<(), bincode::error::EncodeError> {
        out.write(self)
    }
}

/// What a broker writes: a [`ServerFrame`], or a [`ServerFrame::Deliver`]
/// whose record writes itself ([`WireRecord`]). Both encode exactly as the
/// equivalent [`ServerFrame`] does under the frame format's bincode
/// `legacy()` (fixed-int) config, the only one [`crate::frame`] uses.
#[derive(Debug, Clone)]
pub enum ServerOut<R> {
    /// Any frame.
    Frame(ServerFrame),
    /// A delivery of a pre-encoded record.
    Deliver {
        /// Which subscription.
        subscription: u64,
        /// The record's offset in the topic.
        offset: u64,
        /// The record, written as bincode (`legacy()` config) encodes a [`Record`].
        record: R,
    },
}

/// The variant index of [`ServerFrame::Deliver`] (bincode writes it as a
/// u32 before the fields).
const DELIVER_VARIANT: u32 = 3;

impl<R: WireRecord> Encode for ServerOut<R> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        match self {
            ServerOut::Frame(f) => f.encode(encoder),
            ServerOut::Deliver {
                subscription,
                offset,
                record,
            } => {
                DELIVER_VARIANT.encode(encoder)?;
                subscription.encode(encoder)?;
                offset.encode(encoder)?;
                record.write_wire(encoder.writer())
            }
        }
    }
}

#[cfg(test)]
mod server_out_tests {
    use super::*;

    #[test]
    fn a_pre_encoded_delivery_is_byte_for_byte_a_deliver_frame() {
        let record = Record {
            timestamp_ms: 1_700_000_000_123,
            headers: vec![("hl7.control_id".into(), "X1".into())],
            content_type: "application/hl7-v2".into(),
            payload: b"MSH|^~\\&|A\r".to_vec(),
        };
        let frame = ServerFrame::Deliver {
            subscription: 7,
            offset: 42,
            record: record.clone(),
        };
        let body = bincode::encode_to_vec(&record, bincode::config::legacy()).expect("record");
        let out: ServerOut<Vec<u8>> = ServerOut::Deliver {
            subscription: 7,
            offset: 42,
            record: body,
        };
        let a = crate::frame::to_bytes(&frame, 1 << 20).expect("frame");
        let b = crate::frame::to_bytes(&out, 1 << 20).expect("out");
        assert_eq!(a, b);
        let (decoded, _) = crate::frame::parse::<ServerFrame>(&b, 1 << 20).expect("parses");
        assert_eq!(decoded, frame);
        let pong = ServerFrame::Pong { request_id: 1 };
        assert_eq!(
            crate::frame::to_bytes(&pong, 64).expect("pong"),
            crate::frame::to_bytes(&ServerOut::<Vec<u8>>::Frame(pong), 64).expect("out")
        );
    }
}
