// Link Debian's OpenBLAS (libopenblas-dev) for the `cblas-sys` declarations.
// BLIS is NOT linked here: it exports the same `cblas_sgemm`/`sgemm_` symbols
// as OpenBLAS, so it is loaded at run time with dlopen(RTLD_LOCAL|RTLD_DEEPBIND)
// (see src/main.rs) to make sure each backend really runs its own code.
fn main() {
    println!("cargo:rustc-link-search=native=/usr/lib/x86_64-linux-gnu");
    println!("cargo:rustc-link-lib=dylib=openblas");
    println!("cargo:rerun-if-changed=build.rs");
}
