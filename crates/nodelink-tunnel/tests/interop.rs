//! The interop matrix with Debian's kcptun (20210922): our client with `kcptun-server`, and
//! `kcptun-client` with our server, for the four flag sets of [`common::MATRIX`]; each
//! moves 8 parallel TCP streams of 8 MB through the tunnel to a TCP echo target and back,
//! verified byte for byte. kcptun runs as child processes on loopback, killed by a guard
//! even when a test fails; our end runs in this process.
//!
//! The kcptun binaries must be on PATH: without them these tests FAIL and say to run
//! `scripts/install-kcp-deps.sh`. They are never skipped.

mod common;

use common::*;

/// Our client, kcptun-server.
async fn ours_with_kcptun_server(name: &str, flags: &[&str]) {
    let echo = echo_target().await;
    let (mut server, server_addr) = kcptun_server(echo.addr, flags);
    let client = our_client(server_addr, flags).await;
    let took = echo_streams(client.addr, STREAMS, STREAM_BYTES)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\nkcptun-server log:\n{}", server.log()));
    server.assert_running();
    client.stop().await;
    eprintln!("{name}: our client -> kcptun-server: {STREAMS} x {STREAM_BYTES} bytes echoed in {took:.2?}");
}

/// kcptun-client, our server.
async fn kcptun_client_with_ours(name: &str, flags: &[&str]) {
    let echo = echo_target().await;
    let server = our_server(echo.addr, flags).await;
    let (mut client, client_addr) = kcptun_client(server.addr, flags);
    let took = echo_streams(client_addr, STREAMS, STREAM_BYTES)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\nkcptun-client log:\n{}", client.log()));
    client.assert_running();
    drop(client);
    server.stop().await;
    eprintln!("{name}: kcptun-client -> our server: {STREAMS} x {STREAM_BYTES} bytes echoed in {took:.2?}");
}

macro_rules! matrix {
    ($($idx:literal => $ours_client:ident, $ours_server:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $ours_client() {
            let (name, flags) = MATRIX[$idx];
            ours_with_kcptun_server(name, flags).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $ours_server() {
            let (name, flags) = MATRIX[$idx];
            kcptun_client_with_ours(name, flags).await;
        }
    )*};
}

matrix! {
    0 => our_client_kcptun_server_defaults, kcptun_client_our_server_defaults;
    1 => our_client_kcptun_server_salsa20_smux2_nocomp_fast3,
         kcptun_client_our_server_salsa20_smux2_nocomp_fast3;
    2 => our_client_kcptun_server_none_nofec_normal, kcptun_client_our_server_none_nofec_normal;
    3 => our_client_kcptun_server_xor_fec5_2_fast2_smux2,
         kcptun_client_our_server_xor_fec5_2_fast2_smux2;
}

/// The harness on its own: kcptun-client with kcptun-server through the same echo target
/// and stream check, so a harness fault cannot pass for a fault of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_kcptun_client_with_kcptun_server() {
    let echo = echo_target().await;
    let (mut server, server_addr) = kcptun_server(echo.addr, &[]);
    let (mut client, client_addr) = kcptun_client(server_addr, &[]);
    echo_streams(client_addr, 2, 1 << 20)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nkcptun-client log:\n{}\nkcptun-server log:\n{}",
                client.log(),
                server.log()
            )
        });
    client.assert_running();
    server.assert_running();
}

/// Both binaries are required, and found (this is what fails first on a machine without
/// kcptun, with the instruction to install it).
#[test]
fn kcptun_binaries_are_installed() {
    for name in ["kcptun-client", "kcptun-server"] {
        assert!(kcptun_binary(name).is_file());
    }
}
