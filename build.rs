//! Generates include/resilient_amqp.h with cbindgen (pinned in Cargo.toml).
//! The header is committed; CI checks that a build leaves it unchanged.

fn main() {
    write_pkg_config();
    link_args();
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

/// The shared library exports only `amqp_*` (abi/resilient_amqp.map) and is
/// named libresilient_amqp.so.MAJOR (its SONAME, from Cargo.toml's version);
/// scripts/install.sh installs it as .so.MAJOR.MINOR.PATCH with the links.
fn link_args() {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_default();
    println!("cargo:rerun-if-changed=abi/resilient_amqp.map");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={crate_dir}/abi/resilient_amqp.map"
        );
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libresilient_amqp.so.{major}");
        soname_links(&major);
    }
}

/// A program linked with `-L target/release -lresilient_amqp` needs
/// libresilient_amqp.so.MAJOR (the SONAME) at run time: the link
/// `libresilient_amqp.so.MAJOR -> libresilient_amqp.so` next to the built
/// library (target/<profile>/ and its deps/) keeps the in-tree way working.
fn soname_links(major: &str) {
    let Some(profile_dir) = profile_dir() else {
        return;
    };
    for dir in [profile_dir.clone(), profile_dir.join("deps")] {
        let link = dir.join(format!("libresilient_amqp.so.{major}"));
        if link.symlink_metadata().is_err() {
            let _ = std::os::unix::fs::symlink("libresilient_amqp.so", link);
        }
    }
}

/// target/<profile>/: OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
fn profile_dir() -> Option<std::path::PathBuf> {
    let out_dir = std::env::var("OUT_DIR").ok()?;
    Some(
        std::path::Path::new(&out_dir)
            .ancestors()
            .nth(3)?
            .to_path_buf(),
    )
}

/// The header's version macros, from Cargo.toml's version (its one place);
/// tests/facts.rs checks they, amqp_library_version() and Cargo.toml agree.
fn version_macros() -> String {
    let part = |name: &str| std::env::var(name).unwrap_or_default();
    format!(
        "\n/* The library version this header belongs to, from Cargo.toml; \
         amqp_library_version()\n   returns the loaded library's. (Not AMQP_VERSION_*: \
         rabbitmq-c's amqp.h has those.) */\n\
         #define AMQP_LIBRARY_VERSION_MAJOR {}\n\
         #define AMQP_LIBRARY_VERSION_MINOR {}\n\
         #define AMQP_LIBRARY_VERSION_PATCH {}\n\
         #define AMQP_LIBRARY_VERSION_STRING \"{}\"\n",
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
    let Some(profile_dir) = profile_dir() else {
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
