//! Fixed test inputs made with openssl (ring cannot generate RSA keys, nor sign with 1024-bit ones).

/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl pkcs8 -topk8 -nocrypt -outform DER`
pub(super) const RSA2048_PKCS8: &[&str] = &[
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCRQzZXzw+Bi/udQXs1Wv6So8zs",
    "+GI4dCPxyegZKdlhA8xHgIb5hOK5yagu05nfDfnXKg+flIE7FkdEwl6+xhai8eehRz4s9uGf46Mu",
    "HKadeEw48YubGKMVU5zQEaF8jSV8C55TIjGzBoyfgnzBwPffbDv/F83usiT0GorXVAE+cB49RuB0",
    "ZKQ7P9SeUNz2oRm50oWAJAWybg2A5+dPaX4PN21bZfU9+9L0WHFMMsTavB/naxYAdyryxv9PqnwR",
    "MN0kD5YMUVeoZqT9b7de8wD/WOb+pSqzFp3RUrC+ReShz2vSVGe9wMAYpAiS3r/WpheMh81pZjSN",
    "RukIruYJwgsHAgMBAAECggEAQzTWgp+w693I5sOx7kiQOWYBXK26O6Y4LxicAnBjO0hXjclAKVc6",
    "0nwjDK8npJRBwDOckNdTRvQSuxQ2Y4sgU/kZknt0n7cFQkU+bQoiZ/6NPVc7oOEwKqDJj1Zo4Ugo",
    "TJDPimTqm4pvKyli8P2HcN4Rj/8CbuoKwMk67U7XWHwyVWuMARfErjaVBNHsyknoHxHpLHg5x0bz",
    "+aBp1+UDNdZpsjvP8xy2ZFLoUE2EI+JXC/eVNRV1hCzWw74uEuoMrUEFD3VYZOgG6lHRwbDRInf/",
    "vd/ZVVcKCAez8C8tCHgOo/3dOgvKviPeNGmEfWMMF08DyTO4Mrk5cx2t4he46QKBgQDJcadDgS1o",
    "owW2mC4YMjPczbcqry6GZ4ACEwRdD1awXdIEWFqU8/kpyaijJNbOgX+9FbWwh6gVa9Eyexiu5g5V",
    "QiOokdhGReMgDi8DDqQ5WR4AzbVCtFaitk5zCudxA0jzFVF/vk4wBqhZHVqlJfJpJfywGOZ8vep9",
    "hYOnPMPDhQKBgQC4mm+EqaDoPt05uwCJG3fUmdI4MDWeoyT/ej7/v7LusqhGMis/M59XdISn/Vks",
    "IIdX7v30OGzruHeEzoQxYKmUdcLOwBT8ZLa8aRqxf3T+jTzZBWq92JnxKuRCXLWH5NROgY0xMwi2",
    "+ePfjEfbG1uQ7nddlKeojudUwXF/3Uh8GwKBgGMUPXqcTKNMm4DFtNY9yvhtTgv2geGlgnaCuAC1",
    "jKPOYX+1nUfp/8En6IPlmKmVVCjCRsz+zBNNJmW32docWSxiDXvZ0BAwS5f2ofTU/L0gMfufMeoP",
    "HRWGqWs4D8GsJfM5pw43oelJPQAnye+0jFhfULukY6kzF+SJCMn2vyqpAoGBALB5WqCM9Ljw19XH",
    "klSAAMcqIY/7blbwCX99otokrW6JNlqcvUEXHX2icuqRRHztv9TtMLMWefHCD+fS8QavLI4zIX86",
    "mxVJRnPJWm5StUpfRMsG5asFdOzbHwjdzeBSfi9qo8pjyjH5o8DiPxMUDS34+f1pDfoSWs1ofBNL",
    "PG7/AoGAHREUOBqjtpVqmiGpPgvxDtEYyW/n8e+LN3vHwXUJaVe7S5snm+AROaOxxfW54XArNCXr",
    "1+vus8gcbjXub225KdOSBpzPt8LrdDUgy2PyQ9vx6kWhYm4PoPy5PwG8IcoWS5xkEUmracSopzGU",
    "47Jfmb9w0E0QlSOAXj2znwkJlPY=",
];

/// `openssl req -new -newkey rsa:1024 -nodes -subj /CN=small.example.com -addext subjectAltName=DNS:small.example.com -outform DER`
pub(super) const RSA1024_CSR: &[&str] = &[
    "MIIBijCB9AIBADAcMRowGAYDVQQDDBFzbWFsbC5leGFtcGxlLmNvbTCBnzANBgkqhkiG9w0BAQEF",
    "AAOBjQAwgYkCgYEAwKononBhnq/mrk4gzoMeNxIDtp/rRpc3S8FlrC5W1kEkEFX1JsIAD5gg2Llc",
    "9Wb1DlcV4mO8PIaxSEGWKTyYY7Z0/VOIUoxQA6C3GxdUy6ciMyFer5KfhnNB3zt6IUi4th+ZdZPI",
    "NStEB9mJWMJDLNqWZQkhVYEb0Ark2zKspecCAwEAAaAvMC0GCSqGSIb3DQEJDjEgMB4wHAYDVR0R",
    "BBUwE4IRc21hbGwuZXhhbXBsZS5jb20wDQYJKoZIhvcNAQELBQADgYEAMXemOP7fppTAcMJL5h+T",
    "E34oEigEw9RNtHYamfjIXv9Cm+o5OgK8IDzoRkaHw+I1i4dDDFH4LK7VDxrWrWj3RJ3gRofiaeug",
    "YIkSAiRcEkfutHZqlYPMITF8xWR7sx2RrG+79EsedBSvCTjSZhgoOvQtr6tBYLunJhspZhXhNhE=",
];

/// `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:secp256k1 -nodes -subj /CN=k1.example.com -addext subjectAltName=DNS:k1.example.com -outform DER`
pub(super) const SECP256K1_CSR: &[&str] = &[
    "MIH9MIGkAgEAMBkxFzAVBgNVBAMMDmsxLmV4YW1wbGUuY29tMFYwEAYHKoZIzj0CAQYFK4EEAAoD",
    "QgAEdXddIs4MKtOCZfruPZMDTXXhuSCmfJOWLTd+NHEYzTnP6UgqCx/6ekaga1sirJymz4V0xfHG",
    "gcwW1Cq24+ofOKAsMCoGCSqGSIb3DQEJDjEdMBswGQYDVR0RBBIwEIIOazEuZXhhbXBsZS5jb20w",
    "CgYIKoZIzj0EAwIDSAAwRQIhAPt2K/cKEWOwaL20ZgFpR2qIellk1aN+mOtjOySKtTcbAiAs8ktC",
    "PQ2WSGSF3+RrLAv/H9p11VUBK6vJxQp68n+MNg==",
];

/// `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -subj /CN=p521.example.com -addext subjectAltName=DNS:p521.example.com -outform DER`
pub(super) const P521_CSR: &[&str] = &[
    "MIIBizCB7gIBADAbMRkwFwYDVQQDDBBwNTIxLmV4YW1wbGUuY29tMIGbMBAGByqGSM49AgEGBSuB",
    "BAAjA4GGAAQAa5SUhpx+sertmAsZwMyc/3F5Vrf2AvhGKsfPGEDLuKYQdU2eRz/65hAStTvBPuoG",
    "9O61RWjYZgpSQXM0Ywt8N74A/QKl4NbDFk5QzoigUbztUF9C+F8z6Fze/lYd58hXEgYmIXqnS3po",
    "+sZFnwpEloXNCiNYYVoAK2nN426/1oSuHumgLjAsBgkqhkiG9w0BCQ4xHzAdMBsGA1UdEQQUMBKC",
    "EHA1MjEuZXhhbXBsZS5jb20wCgYIKoZIzj0EAwIDgYsAMIGHAkEa9VK4gLHrsvSbPd/mMgSEs4I3",
    "7H6DT5Yz5riJcz+Miflabcd1MjRrS3WePGMbuuZGyI2R09A5rnis0xp8qwlQKgJCAZNNQFTJwLDB",
    "lN7weV9laX27sp1GBgcQaRlqVj5dZTmOWWALFPwLq56Vhgbo4tcE2rAuEooxDTzQfVEZKl4En6W2",
];
