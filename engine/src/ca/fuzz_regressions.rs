//! Inputs the fuzz targets of `fuzz/` found, kept as tests (the targets' seeds do not
//! hold them).

use crate::error::ErrorKind;

use super::{der_tlv as der, parse_csr};

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
