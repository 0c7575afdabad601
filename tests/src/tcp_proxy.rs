//! A loopback TCP proxy that goes down on command: [`TcpProxy::down`]
//! closes its port (new connections are refused) and cuts every open
//! connection; [`TcpProxy::up`] listens on the same port again. Put in
//! front of a server (PostgreSQL) to take it away from a client without
//! stopping it.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TcpProxy {
    pub port: u16,
    target: SocketAddr,
    generation: Option<CancellationToken>,
}

impl TcpProxy {
    /// Listens on a free loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let mut p = TcpProxy {
            port: 0,
            target,
            generation: None,
        };
        p.listen().await?;
        Ok(p)
    }

    async fn listen(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await?;
        self.port = listener.local_addr()?.port();
        let token = CancellationToken::new();
        let target = self.target;
        let t = token.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = t.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let t = t.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // Dropping both sockets cuts the connection.
                        _ = t.cancelled() => {}
                    }
                });
            }
        });
        self.generation = Some(token);
        Ok(())
    }

    /// Refuses new connections and cuts the open ones.
    pub fn down(&mut self) {
        if let Some(t) = self.generation.take() {
            t.cancel();
        }
    }

    /// Listens on the same port again.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        self.down();
        self.listen().await
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.down();
    }
}
