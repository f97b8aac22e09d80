//! Small shared pieces: serial numbers, time conversion, error mapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::error::Error;

/// Octets in every serial we assign.
pub(super) const SERIAL_LEN: usize = 16;

/// A fresh random serial: 16 octets, top bit clear so the INTEGER is positive
/// without a 0x00 pad, next bit set so it never shrinks below 16 octets —
/// 126 random bits, and a hex form of constant length.
pub(super) fn random_serial() -> Result<[u8; SERIAL_LEN], Error> {
    let mut serial = [0u8; SERIAL_LEN];
    SystemRandom::new().fill(&mut serial[1 + TIME_LEN..]).map_err(|_| Error::internal("the system random number generator failed"))?;
    // Positive, no leading zero octet, then the time: serials (stored as hex)
    // sort by issuance, so the certificate table's index grows at its end
    // instead of taking a random page per certificate. 9 random octets stay
    // (72 bits; the Baseline Requirements ask for 64 from a CSPRNG).
    serial[0] = 0x40;
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()) as u64;
    serial[1..1 + TIME_LEN].copy_from_slice(&millis.to_be_bytes()[8 - TIME_LEN..]);
    Ok(serial)
}

/// Octets of a serial that carry the time in milliseconds (until year 10889).
const TIME_LEN: usize = 6;

/// One DER TLV with a definite length (short form below 128 octets, else long
/// form): for the few structures built by hand (a JWK's SubjectPublicKeyInfo,
/// test and fuzz inputs).
pub fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Lowercase hex, no separators, of a serial's minimal big-endian magnitude.
/// `raw` may be our 16 octets or a DER INTEGER's content (with its 0x00 pad);
/// both give the same text, so issuance and parsing agree.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let minimal = &raw[start..];
    if minimal.is_empty() {
        return "00".to_string();
    }
    hex::encode(minimal)
}

/// Converts to the whole second X.509 will carry, refusing times a
/// certificate cannot express (before 1970 here, past year 9999 anywhere).
pub(super) fn to_datetime(t: SystemTime) -> Result<OffsetDateTime, Error> {
    let secs = t.duration_since(UNIX_EPOCH).map_err(|_| Error::internal("certificate time before 1970"))?.as_secs();
    let dt = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|dt| dt.year() <= 9999)
        .ok_or_else(|| Error::internal("certificate time beyond year 9999"))?;
    Ok(dt)
}

pub(super) fn to_system(dt: OffsetDateTime) -> SystemTime {
    let secs = dt.unix_timestamp();
    if secs >= 0 { UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) } else { UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) }
}

/// Now, truncated to the second.
pub(super) fn now() -> Result<OffsetDateTime, Error> {
    to_datetime(SystemTime::now())
}

pub(super) fn add_days(t: OffsetDateTime, days: i64) -> Result<OffsetDateTime, Error> {
    t.checked_add(time::Duration::days(days)).ok_or_else(|| Error::internal("certificate validity overflows the calendar"))
}

/// rcgen failures are our own bugs or broken key material, never the client's.
pub(super) fn rcgen_err(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |e| Error::internal(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_is_minimal_and_consistent() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x7f, 0x01]), "7f01");
        assert_eq!(serial_hex(&[0, 0]), "00");
        let s = random_serial().unwrap();
        assert_eq!(serial_hex(&s).len(), 32);
        assert_eq!(s[0] & 0xc0, 0x40);
        // Later serials sort after earlier ones (hex text, as stored); the
        // last 9 octets are random.
        std::thread::sleep(Duration::from_millis(2));
        let t = random_serial().unwrap();
        assert!(serial_hex(&s) < serial_hex(&t));
        assert_ne!(s[1 + TIME_LEN..], t[1 + TIME_LEN..]);
        const { assert!(SERIAL_LEN - 1 - TIME_LEN >= 8, "at least 64 random bits") };
    }

    #[test]
    fn times_round_trip_at_second_precision() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(to_system(to_datetime(t).unwrap()), UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(to_datetime(UNIX_EPOCH - Duration::from_secs(1)).is_err());
    }
}
