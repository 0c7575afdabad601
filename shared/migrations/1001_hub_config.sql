-- The hub config in PostgreSQL (CONFIG_SOURCE=postgres): the TOML file's
-- sections as rows. Each `doc` is a jsonb object in the shape of its TOML
-- section, checked by the same validation as the file when a stage loads
-- it; only names of environment variables or files (`*_env`, `*_file`)
-- stand for secrets, never a secret itself.
--
-- Versions 1001 and up: the ledger's migrations (1, 2, ...) share this
-- database's _sqlx_migrations, and both migrators ignore the other's rows.

CREATE TABLE hub_tenants (
    id text PRIMARY KEY,
    doc jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(doc) = 'object' AND NOT doc ? 'id'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hub_accounts (
    provider text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(doc) = 'object'
               AND NOT doc ?| ARRAY['id', 'provider', 'branches', 'products']),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, id)
);

-- An account's `branches`: the provider's store id to the tenant's branch.
CREATE TABLE hub_branches (
    provider text NOT NULL,
    account_id text NOT NULL,
    store_id text NOT NULL,
    branch_id text NOT NULL,
    PRIMARY KEY (provider, account_id, store_id),
    FOREIGN KEY (provider, account_id) REFERENCES hub_accounts (provider, id)
        ON DELETE CASCADE ON UPDATE CASCADE
);

-- An account's `products`: the provider's item id to the tenant's product.
CREATE TABLE hub_products (
    provider text NOT NULL,
    account_id text NOT NULL,
    provider_product_id text NOT NULL,
    product_id text NOT NULL,
    PRIMARY KEY (provider, account_id, provider_product_id),
    FOREIGN KEY (provider, account_id) REFERENCES hub_accounts (provider, id)
        ON DELETE CASCADE ON UPDATE CASCADE
);

-- The file's other sections, one row each.
CREATE TABLE hub_settings (
    section text PRIMARY KEY CHECK (section IN (
        'retry', 'streams', 'ingress', 'forwarder', 'provider_api', 'fetcher', 'status_sync')),
    doc jsonb NOT NULL CHECK (jsonb_typeof(doc) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Bumped by every statement that changes a table above; a stage compares
-- it with the version it runs to catch a lost notification.
CREATE TABLE hub_config_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO hub_config_version VALUES (true, 0);

-- One notification per transaction: PostgreSQL folds identical payloads
-- on one channel within a transaction.
CREATE FUNCTION hub_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hub_config_version SET version = version + 1;
    PERFORM pg_notify('orderhub_config', 'changed');
    RETURN NULL;
END
$$;

CREATE TRIGGER hub_tenants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hub_tenants FOR EACH STATEMENT EXECUTE FUNCTION hub_config_changed();
CREATE TRIGGER hub_accounts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hub_accounts FOR EACH STATEMENT EXECUTE FUNCTION hub_config_changed();
CREATE TRIGGER hub_branches_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hub_branches FOR EACH STATEMENT EXECUTE FUNCTION hub_config_changed();
CREATE TRIGGER hub_products_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hub_products FOR EACH STATEMENT EXECUTE FUNCTION hub_config_changed();
CREATE TRIGGER hub_settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON hub_settings FOR EACH STATEMENT EXECUTE FUNCTION hub_config_changed();
