//! Serde types as messages, encoded with MessagePack (the framing NEO/py moved to).

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Encodes `value` as MessagePack into `dst` (used by [`serde_message!`](crate::serde_message)).
pub fn encode_serde<T: serde::Serialize>(value: &T, dst: &mut BytesMut) {
    let mut writer = dst.writer();
    // Writing into memory only fails if the type's Serialize impl itself fails, which is a
    // bug in that type; encode an empty payload then, so the peer gets a decode error.
    if rmp_serde::encode::write_named(&mut writer, value).is_err() {
        tracing::error!(
            type_name = std::any::type_name::<T>(),
            "serde message failed to encode"
        );
    }
}

/// Decodes a MessagePack payload (used by [`serde_message!`](crate::serde_message)).
pub fn decode_serde<T: serde::de::DeserializeOwned>(payload: Bytes) -> Result<T, DecodeError> {
    rmp_serde::from_slice(&payload).map_err(|e| DecodeError::Codec(e.to_string()))
}

/// Makes a serde type a [`Message`](crate::Message) with the given code, encoded as
/// MessagePack. The second form declares a request and its answer at once: both become
/// messages, the request implements [`Ask`](crate::Ask) with that answer, and the build
/// fails if the codes break NEO's answer-bit rule (request without `0x8000`, answer with).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Hello { name: String, port: u16 }
/// nodelink::serde_message!(Hello = 0x0042);
///
/// use nodelink::Message;
/// let mut buf = bytes::BytesMut::new();
/// let hello = Hello { name: "storage-1".into(), port: 5552 };
/// hello.encode(&mut buf);
/// assert_eq!(Hello::decode(buf.freeze()).unwrap(), hello);
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct GetObject { oid: u64 }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct AnswerObject { data: Vec<u8> }
/// nodelink::serde_message!(GetObject = 0x0011 => AnswerObject = 0x8011);
/// ```
///
/// ```compile_fail
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Get;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Got;
/// // The answer's code lacks the answer bit: the build fails here.
/// nodelink::serde_message!(Get = 0x0011 => Got = 0x0012);
/// ```
#[macro_export]
macro_rules! serde_message {
    ($ty:ty = $code:expr) => {
        impl $crate::Message for $ty {
            const CODE: u16 = $code;
            fn encode(&self, dst: &mut $crate::__macro::BytesMut) {
                $crate::encode_serde(self, dst)
            }
            fn decode(
                payload: $crate::__macro::Bytes,
            ) -> ::std::result::Result<Self, $crate::DecodeError> {
                $crate::decode_serde(payload)
            }
        }
    };
    ($req:ty = $req_code:expr => $answer:ty = $answer_code:expr) => {
        $crate::serde_message!($req = $req_code);
        $crate::serde_message!($answer = $answer_code);
        impl $crate::Ask for $req {
            type Answer = $answer;
        }
        const _: () = $crate::__macro::check_codes($req_code, $answer_code);
    };
}
