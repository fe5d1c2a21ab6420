#![allow(clippy::unwrap_used, clippy::expect_used)]
#[test]
fn keygen_time() {
    let t = std::time::Instant::now();
    let k = lanyard_token::SigningKey::generate(1_700_000_000).unwrap();
    eprintln!("keygen {:?} {}", t.elapsed(), k.kid());
    let t = std::time::Instant::now();
    for _ in 0..10 { k.sign(b"hello").unwrap(); }
    eprintln!("sign x10 {:?}", t.elapsed());
}
