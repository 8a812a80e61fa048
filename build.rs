//! Generates include/resilient_amqp.h with cbindgen (pinned in Cargo.toml).
//! The header is committed; CI checks that a build leaves it unchanged.

fn main() {
    write_pkg_config();
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let mut config =
        cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(version_macros() + config.after_includes.as_deref().unwrap_or(""));
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

/// The header's version macros, from Cargo.toml's version (its one place);
/// tests/facts.rs checks they, amqp_version() and Cargo.toml agree.
fn version_macros() -> String {
    let part = |name: &str| std::env::var(name).unwrap_or_default();
    format!(
        "\n/* The library version this header belongs to (Cargo.toml's); \
         amqp_version() returns\n   the loaded library's. */\n\
         #define AMQP_VERSION_MAJOR {}\n\
         #define AMQP_VERSION_MINOR {}\n\
         #define AMQP_VERSION_PATCH {}\n\
         #define AMQP_VERSION_STRING \"{}\"\n",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
        part("CARGO_PKG_VERSION"),
    )
}

/// Writes `resilient_amqp.pc` next to the built libraries
/// (target/<profile>/), so `PKG_CONFIG_PATH=target/release pkg-config
/// --cflags --libs resilient_amqp` gives the flags to build against this tree.
fn write_pkg_config() {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let Ok(out_dir) = std::env::var("OUT_DIR") else {
        return;
    };
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = std::path::Path::new(&out_dir).ancestors().nth(3) else {
        return;
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let pc = format!(
        "prefix={crate_dir}\nincludedir=${{prefix}}/include\nlibdir={}\n\n\
         Name: resilient_amqp\n\
         Description: RabbitMQ client that does not lose messages when the broker goes away\n\
         Version: {version}\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -lresilient_amqp -Wl,-rpath,${{libdir}}\n\
         Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc\n",
        profile_dir.display()
    );
    let _ = std::fs::write(profile_dir.join("resilient_amqp.pc"), pc);
}
