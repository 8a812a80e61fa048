//! Generates include/resilient_amqp.h with cbindgen (pinned in Cargo.toml).
//! The header is committed; CI checks that a build leaves it unchanged.

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(format!("{crate_dir}/include/resilient_amqp.h"));
        }
        Err(e) => {
            // A parse error in src/ is reported by rustc itself; don't fail twice.
            println!("cargo:warning=cbindgen could not generate the header: {e}");
        }
    }
}
