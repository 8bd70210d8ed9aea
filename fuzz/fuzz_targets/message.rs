//! Control messages: arbitrary bytes parsed as each message type. Whatever
//! parses must survive a round trip (what one side sends, the other reads
//! back unchanged).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use twoway_common::message::{self, Assignment, Bye, Hello, Refusal};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(msg) = message::decode::<T>(data) {
        let again: T = message::decode(&message::encode(&msg)).expect("re-encoded message parses");
        assert_eq!(again, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Hello>(data);
    round_trip::<Assignment>(data);
    round_trip::<Refusal>(data);
    round_trip::<Bye>(data);
});
