//! Writes the test vectors into a directory (default `test-vectors`):
//! `cargo run -p sessioncert-vectors -- test-vectors`.
#![forbid(unsafe_code)]

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-vectors".to_owned());
    std::fs::create_dir_all(&dir).expect("create output directory");
    for (name, text) in sessioncert_vectors::generate() {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, text).expect("write vector file");
        println!("wrote {}", path.display());
    }
}
