//! The opaque page cursor: base64url (no padding) of a version byte, the order byte and the
//! last sort key returned. A cursor that does not decode, has another version or another
//! order than the request is refused (400), so a tampered cursor never reads garbage.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::item::TIME_DIGITS;
use crate::store::Order;

const VERSION: u8 = 1;
/// Longest cursor accepted (a sort key is 14 bytes plus an event id).
const MAX_LEN: usize = 2048;

/// Encodes the position after `sk` for pages in `order`.
pub fn encode(order: Order, sk: &str) -> String {
    let mut bytes = Vec::with_capacity(sk.len() + 2);
    bytes.push(VERSION);
    bytes.push(order_byte(order));
    bytes.extend_from_slice(sk.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a cursor given with `order`: the sort key to continue after.
pub fn decode(order: Order, cursor: &str) -> Result<String, &'static str> {
    if cursor.len() > MAX_LEN {
        return Err("cursor too long");
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| "cursor is not one this API returned (not base64url)")?;
    match bytes.as_slice() {
        [VERSION, o, sk @ ..] if *o == order_byte(order) => {
            let sk = std::str::from_utf8(sk).map_err(|_| "cursor is corrupt")?;
            let well_formed = sk.len() > TIME_DIGITS
                && sk.as_bytes()[..TIME_DIGITS].iter().all(u8::is_ascii_digit)
                && sk.as_bytes()[TIME_DIGITS] == b'#';
            if well_formed { Ok(sk.to_owned()) } else { Err("cursor is corrupt") }
        }
        [VERSION, _, ..] => Err("cursor was made for the other order"),
        _ => Err("cursor is not one this API returned (unknown version)"),
    }
}

fn order_byte(order: Order) -> u8 {
    match order {
        Order::Asc => b'a',
        Order::Desc => b'd',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let sk = crate::item::sort_key(1_700_000_000_000, "e-1");
        let c = encode(Order::Asc, &sk);
        assert_eq!(decode(Order::Asc, &c), Ok(sk));
        assert!(decode(Order::Desc, &c).is_err());
        assert!(decode(Order::Asc, "!!").is_err());
        assert!(decode(Order::Asc, &URL_SAFE_NO_PAD.encode(b"\x02a0000000000001#x")).is_err());
        assert!(decode(Order::Asc, &URL_SAFE_NO_PAD.encode(b"\x01aNOTADIGITXXX#x")).is_err());
        assert!(decode(Order::Asc, "").is_err());
    }
}
