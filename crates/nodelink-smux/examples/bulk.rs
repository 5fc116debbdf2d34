//! Bulk transfer through one smux session over an in-memory pipe: `STREAMS` streams each
//! send `MIB` MiB to the other side, which reads it all. A small, repeatable load for
//! profiling the session (`valgrind --tool=callgrind target/release/examples/bulk`).
//!
//! ```text
//! cargo run --release -p nodelink-smux --example bulk -- [streams] [mib] [version]
//! ```

use nodelink_smux::Role;
use std::time::Instant;

use nodelink_smux::{Config, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let streams = args.next().transpose()?.unwrap_or(4);
    let mib = args.next().transpose()?.unwrap_or(16);
    let version = args.next().transpose()?.unwrap_or(2) as u8;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (a, b) = tokio::io::duplex(256 << 10);
        let config = Config::default().with_version(version);
        let client = Session::start(a, Role::Client, config.clone())?;
        let server = Session::start(b, Role::Server, config)?;
        let started = Instant::now();
        let reader = tokio::spawn(async move {
            let mut total = 0u64;
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let mut stream = server.accept().await?;
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 << 10];
                    let mut n = 0u64;
                    loop {
                        match stream.read(&mut buf).await? {
                            0 => return Ok::<u64, std::io::Error>(n),
                            k => n += k as u64,
                        }
                    }
                }));
            }
            for task in tasks {
                total += task.await.expect("reader task")?;
            }
            Ok::<u64, BoxError>(total)
        });
        let chunk = vec![7u8; 32 << 10];
        let mut writers = Vec::new();
        for _ in 0..streams {
            let mut stream = client.open().await?;
            let chunk = chunk.clone();
            writers.push(tokio::spawn(async move {
                for _ in 0..mib * 32 {
                    stream.write_all(&chunk).await?;
                }
                stream.shutdown().await
            }));
        }
        for w in writers {
            w.await.expect("writer task")?;
        }
        let total = reader.await.expect("reader")?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{total} bytes over {streams} streams (smux v{version}) in {secs:.3} s: {:.1} MB/s",
            total as f64 / secs / 1e6
        );
        Ok(())
    })
}
