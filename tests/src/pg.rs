//! A PostgreSQL database of the test's own on the machine's server
//! (`127.0.0.1:5432`, trust authentication; `ORDERHUB_TEST_PG` names
//! another server URL): `orderhub_test_<random>`, created by
//! [`TestDb::create`] and dropped (with its connections) when the value is
//! dropped, also when the test fails.

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::STEP;

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("ORDERHUB_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestDb {
    pub name: String,
    admin: PgConnectOptions,
}

impl TestDb {
    /// A name of its own, not created yet (for a program under test that
    /// creates its database itself); dropped like a created one.
    pub fn reserve() -> anyhow::Result<TestDb> {
        let admin: PgConnectOptions = server_url().parse().context("ORDERHUB_TEST_PG")?;
        let name = format!("orderhub_test_{}", uuid::Uuid::new_v4().simple());
        Ok(TestDb { name, admin })
    }

    pub async fn create() -> anyhow::Result<TestDb> {
        let db = Self::reserve()?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.admin.clone());
        let pool = tokio::time::timeout(STEP, pool)
            .await?
            .context("the tests' PostgreSQL at 127.0.0.1:5432")?;
        sqlx::query(&format!("CREATE DATABASE {}", db.name))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(db)
    }

    /// Its URL, for a process under test (`DATABASE_URL`).
    pub fn url(&self) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&server_url()).context("ORDERHUB_TEST_PG")?;
        url.set_path(&self.name);
        Ok(url.to_string())
    }

    /// Connection options for the test database.
    pub fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// Its URL through another port (a proxy in front of the server).
    pub fn options_via(&self, port: u16) -> PgConnectOptions {
        self.options().host("127.0.0.1").port(port)
    }

    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(tokio::time::timeout(
            STEP,
            PgPoolOptions::new()
                .max_connections(2)
                .connect_with(self.options()),
        )
        .await??)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside (or inside) a runtime: a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let drop = async {
                    let pool = PgPoolOptions::new()
                        .max_connections(1)
                        .connect_with(admin)
                        .await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await?;
                    pool.close().await;
                    Ok::<_, sqlx::Error>(())
                };
                if let Err(e) = tokio::time::timeout(STEP, drop).await {
                    eprintln!("test database {name} not dropped: {e}");
                }
            });
        })
        .join();
        if done.is_err() {
            eprintln!("test database {} not dropped", self.name);
        }
    }
}
