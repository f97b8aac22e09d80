//! Inputs the fuzz targets of `fuzz/` found, kept as tests (the targets' seeds do not
//! hold them).

use crate::error::ErrorKind;

use super::parse_csr;

/// One DER TLV (short or long definite length).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
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

/// fuzz/ `csr`: a request of version 2^32-1 overflowed the u32 `version + 1` of the
/// error message, a panic wherever overflow checks are on (debug builds, tests).
#[test]
fn a_csr_of_the_largest_version_is_refused_without_overflow() {
    let key = rcgen::KeyPair::generate().unwrap();
    let version = [0x02, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff];
    // certificationRequestInfo { version, subject (empty), the key, attributes [0] {} }
    let info = der(0x30, &[&version[..], &[0x30, 0x00], &rcgen::PublicKeyData::subject_public_key_info(&key), &[0xa0, 0x00]].concat());
    let ecdsa_with_sha256 = der(0x30, &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
    let request = der(0x30, &[&info[..], &ecdsa_with_sha256, &der(0x03, &[0x00])].concat());
    let err = parse_csr(&request).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadCsr);
    assert!(err.detail.contains("version 4294967296 is not v1"), "{}", err.detail);
}
