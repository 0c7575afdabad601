//! Properties every scheme shares, driven through the registry.

use crate::Provider;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use secrecy::SecretString;

use super::testutil::*;
use super::*;

/// A secret `provider` can use, from arbitrary key bytes: Standard Webhooks
/// wants `whsec_<base64>`, the others take the configured text as the key.
fn secret_for(provider: Provider, key: &[u8]) -> SecretString {
    match provider {
        Provider::Direct => SecretString::from(format!("whsec_{}", STANDARD.encode(key))),
        _ => SecretString::from(hex::encode(key)),
    }
}

/// Whether the scheme's signature covers every byte of the body (a bearer
/// token or a static one does not; Keeta's covers the values of a JSON
/// envelope, and has its own tests for that).
fn signs_body(provider: Provider) -> bool {
    !matches!(
        provider,
        Provider::Talabat | Provider::Doordash | Provider::Glovo | Provider::Grab | Provider::Keeta
    )
}

/// The options of a test account of `provider`: what Grab and Keeta need.
fn options_for(provider: Provider) -> VerifyOptions {
    let defaults = VerifyOptions::default();
    match provider {
        Provider::Grab => VerifyOptions {
            grab: Some(std::sync::Arc::new(grab::Audience {
                account: "acme-grab".into(),
                client_id: "acme-grab-client".into(),
                token_lifetime: std::time::Duration::from_secs(3600),
            })),
            ..defaults
        },
        Provider::Keeta => VerifyOptions {
            webhook_url: Some("https://hub.example/api/webhooks/keeta/acme-keeta".into()),
            ..defaults
        },
        _ => defaults,
    }
}

/// A body `provider` can carry made of `bytes`: Keeta signs inside its
/// documented envelope (`message` the bytes, `messageId` digits from them),
/// the others take any bytes.
fn body_for(provider: Provider, bytes: &[u8]) -> Vec<u8> {
    match provider {
        Provider::Keeta => keeta_envelope(
            &bytes
                .iter()
                .take(16)
                .map(|b| char::from(b'0' + b % 10))
                .chain(std::iter::once('1'))
                .collect::<String>(),
            &String::from_utf8_lossy(bytes),
        ),
        _ => bytes.to_vec(),
    }
}

/// Keeta's envelope [DOC] with `message_id` and `message`, unsigned.
fn keeta_envelope(message_id: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "eventId": 1001,
        "appId": 3762772727u64,
        "messageId": message_id,
        "shopId": 145541,
        "message": message,
        "timestamp": 0,
    })
    .to_string()
    .into_bytes()
}

const AT: u64 = 1_718_388_131;

#[test]
fn every_provider_has_a_verifier_that_accepts_its_own_signature() {
    for provider in Provider::ALL {
        let options = options_for(provider);
        let key = secret_for(provider, b"0123456789abcdef0123456789abcdef");
        let v = verifier(provider);
        let unsigned = body_for(provider, b"{\"id\":1}");
        let signed = v.sign(&unsigned, &key, &options, at(AT)).unwrap();
        let body = signed.body(&unsigned);
        assert_eq!(
            v.verify(&signed.headers, body, &[key], &options, at(AT))
                .map(|v| v.secret_index),
            Ok(0),
            "{provider}"
        );
    }
}

#[test]
fn every_provider_with_an_account_setting_refuses_an_account_without_it() {
    for provider in Provider::ALL {
        let key = secret_for(provider, b"0123456789abcdef0123456789abcdef");
        let v = verifier(provider);
        let signed = v.sign(b"{}", &key, &options_for(provider), at(AT)).unwrap();
        let result = v.verify(
            &signed.headers,
            signed.body(b"{}"),
            std::slice::from_ref(&key),
            &VerifyOptions::default(),
            at(AT),
        );
        let unsigned = v.sign(b"{}", &key, &VerifyOptions::default(), at(AT));
        match provider {
            Provider::Grab => {
                assert_eq!(result, Err(VerifyError::Unconfigured("token endpoint")));
                assert_eq!(
                    unsigned.unwrap_err(),
                    SignError::Unconfigured("grab audience")
                );
            }
            Provider::Keeta => {
                assert_eq!(result, Err(VerifyError::Unconfigured("webhook url")));
                assert_eq!(
                    unsigned.unwrap_err(),
                    SignError::Unconfigured("webhook url")
                );
            }
            _ => {
                assert_eq!(result.map(|v| v.secret_index), Ok(0), "{provider}");
                assert!(unsigned.is_ok(), "{provider}");
            }
        }
    }
}

#[test]
fn every_provider_refuses_an_account_without_secrets_first() {
    for provider in Provider::ALL {
        let err = verifier(provider)
            .verify(&headers(&[]), b"{}", &[], &VerifyOptions::default(), at(AT))
            .unwrap_err();
        assert_eq!(err, VerifyError::NoSecret, "{provider}");
        assert!(err.is_misconfiguration());
    }
}

#[test]
fn every_provider_reports_a_missing_signature_on_a_bare_request() {
    for provider in Provider::ALL {
        let key = secret_for(provider, b"key");
        let err = verifier(provider)
            .verify(&headers(&[]), b"{}", &[key], &options_for(provider), at(AT))
            .unwrap_err();
        // Keeta's sig is a body field; everyone else's is a header.
        let missing = match provider {
            Provider::Keeta => "missing_field",
            _ => "missing_header",
        };
        assert_eq!(err.error_type(), missing, "{provider}");
        assert!(!err.is_misconfiguration());
    }
}

#[test]
fn errors_carry_neither_secrets_nor_signatures() {
    for provider in Provider::ALL {
        let options = options_for(provider);
        let key_text = "0123456789abcdef0123456789abcdef";
        let key = secret_for(provider, key_text.as_bytes());
        let other = secret_for(provider, b"another key entirely");
        let v = verifier(provider);
        let unsigned = body_for(provider, b"{}");
        let signed = v.sign(&unsigned, &key, &options, at(AT)).unwrap();
        let err = v
            .verify(
                &signed.headers,
                signed.body(&unsigned),
                &[other],
                &options,
                at(AT),
            )
            .unwrap_err();
        assert_eq!(err, VerifyError::BadSignature, "{provider}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(key_text) && !shown.contains(&hex::encode(key_text)));
        for value in signed.headers.values() {
            assert!(
                !shown.contains(value.to_str().unwrap()),
                "{provider}: {shown}"
            );
        }
    }
}

#[test]
fn error_types_are_distinct_stable_labels() {
    let all = [
        VerifyError::MissingHeader("h"),
        VerifyError::MalformedBody("r"),
        VerifyError::MissingField("f"),
        VerifyError::MalformedField {
            field: "f",
            reason: "r",
        },
        VerifyError::MalformedHeader {
            header: "h",
            reason: "r",
        },
        VerifyError::BadSignature,
        VerifyError::StaleTimestamp {
            skew_secs: 1,
            tolerance_secs: 0,
        },
        VerifyError::MalformedToken("r"),
        VerifyError::DisallowedAlgorithm,
        VerifyError::InvalidClaims("r"),
        VerifyError::ExpiredToken { expired_secs: 1 },
        VerifyError::NoSecret,
        VerifyError::InvalidSecret,
        VerifyError::Unconfigured("setting"),
    ];
    let labels: Vec<&str> = all.iter().map(VerifyError::error_type).collect();
    assert_eq!(
        labels,
        [
            "missing_header",
            "malformed_body",
            "missing_field",
            "malformed_field",
            "malformed_header",
            "bad_signature",
            "stale_timestamp",
            "malformed_token",
            "disallowed_algorithm",
            "invalid_claims",
            "expired_token",
            "no_secret",
            "invalid_secret",
            "unconfigured",
        ]
    );
    for err in &all {
        let message = err.to_string();
        assert!(
            message.starts_with(|c: char| c.is_ascii_lowercase()) && !message.ends_with('.'),
            "{message}"
        );
    }
}

/// A provider's documented request: body and headers exactly as its vector
/// has them, signed with [`FIXTURE_SECRET`].
struct Documented {
    provider: Provider,
    body: &'static [u8],
    headers: HeaderMap,
    event_id: Option<&'static str>,
}

/// Every HMAC-over-the-body scheme's documented vectors (both of Deliveroo's
/// message forms). Talabat signs a token, not the body; Standard Webhooks
/// (`direct`) also signs an id and a timestamp and has its own tests.
fn documented_hmac_requests() -> Vec<Documented> {
    let deliveroo = |signature| Documented {
        provider: Provider::Deliveroo,
        body: DELIVEROO_ORDER_CREATED,
        headers: headers(&[
            (deliveroo::GUID_HEADER, DELIVEROO_FIXTURE_GUID),
            (deliveroo::SIGNATURE_HEADER, signature),
        ]),
        event_id: Some(DELIVEROO_FIXTURE_GUID),
    };
    vec![
        Documented {
            provider: Provider::Careem,
            body: CAREEM_SAMPLE,
            headers: headers(&[(careem::SIGNATURE_HEADER, CAREEM_SAMPLE_SIGNATURE)]),
            event_id: None,
        },
        deliveroo(DELIVEROO_FIXTURE_CURRENT),
        deliveroo(DELIVEROO_FIXTURE_LEGACY),
        Documented {
            provider: Provider::Ubereats,
            body: UBEREATS_ORDER_NOTIFICATION,
            headers: headers(&[(ubereats::SIGNATURE_HEADER, UBEREATS_FIXTURE_SIGNATURE)]),
            event_id: Some(UBEREATS_FIXTURE_EVENT_ID),
        },
        Documented {
            provider: Provider::Wolt,
            body: WOLT_ORDER_CREATED,
            headers: headers(&[(wolt::SIGNATURE_HEADER, WOLT_FIXTURE_SIGNATURE)]),
            event_id: Some(WOLT_FIXTURE_EVENT_ID),
        },
        Documented {
            provider: Provider::Justeat,
            body: JUSTEAT_ORDER_CREATED,
            headers: headers(&[(justeat::SIGNATURE_HEADER, JUSTEAT_FIXTURE_HEADER)]),
            event_id: None,
        },
    ]
}

/// The checks every HMAC scheme shares, on the providers' own requests rather
/// than on what our `sign` makes (the property tests cover those): the
/// documented request verifies, also with its secret second in the list
/// (rotation), and fails as a bad signature with one body byte changed or
/// with another secret.
#[test]
fn hmac_schemes_hold_on_documented_requests() {
    let options = VerifyOptions::default();
    for case in documented_hmac_requests() {
        let provider = case.provider;
        let verify = |body: &[u8], keys: &[&str]| {
            verifier(provider).verify(&case.headers, body, &secrets(keys), &options, at(0))
        };
        let verified = |secret_index| {
            Ok(Verified {
                event_id: case.event_id.map(str::to_owned),
                secret_index,
            })
        };
        assert_eq!(
            verify(case.body, &[FIXTURE_SECRET]),
            verified(0),
            "{provider}"
        );
        assert_eq!(
            verify(case.body, &["old", FIXTURE_SECRET]),
            verified(1),
            "{provider}: rotation"
        );
        assert_eq!(
            verify(&tampered(case.body), &[FIXTURE_SECRET]),
            Err(VerifyError::BadSignature),
            "{provider}: tampered body"
        );
        assert_eq!(
            verify(case.body, &["another secret"]),
            Err(VerifyError::BadSignature),
            "{provider}: wrong secret"
        );
    }
}

fn any_provider() -> impl Strategy<Value = Provider> {
    proptest::sample::select(Provider::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// verify(sign(x)) holds for every scheme, any body bytes (JSON or not),
    /// any key, any signing time, with the signing secret second in the list.
    #[test]
    fn verify_accepts_sign(
        provider in any_provider(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        key in proptest::collection::vec(any::<u8>(), 1..64),
        secs in 0u64..4_000_000_000,
    ) {
        let options = options_for(provider);
        let body = body_for(provider, &body);
        let v = verifier(provider);
        let key_secret = secret_for(provider, &key);
        // Not `key` plus a zero byte: HMAC zero-pads short keys, so that
        // would be the same key.
        let mut decoy = key.clone();
        decoy[0] ^= 0xff;
        let secrets = [secret_for(provider, &decoy), key_secret.clone()];
        let signed = v.sign(&body, &key_secret, &options, at(secs)).unwrap();
        let verified = v.verify(&signed.headers, signed.body(&body), &secrets, &options, at(secs));
        prop_assert_eq!(verified.map(|v| v.secret_index), Ok(1));
    }

    /// Changing any byte of the body breaks every body-signing scheme.
    #[test]
    fn verify_refuses_a_changed_body(
        provider in any_provider().prop_filter("scheme signs the body", |p| signs_body(*p)),
        body in proptest::collection::vec(any::<u8>(), 1..512),
        position in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let options = VerifyOptions::default();
        let v = verifier(provider);
        let key = secret_for(provider, b"key material");
        let signed = v.sign(&body, &key, &options, at(AT)).unwrap();
        prop_assert!(signed.body.is_none());
        let mut changed = body.clone();
        changed[position.index(body.len())] ^= flip;
        prop_assert_eq!(
            v.verify(&signed.headers, &changed, &[key], &options, at(AT)),
            Err(VerifyError::BadSignature)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Keeta signs the values of its envelope: changing any character of
    /// the embedded message breaks the signature.
    #[test]
    fn keeta_refuses_a_changed_message(
        message in "[ -~]{1,200}",
        position in any::<proptest::sample::Index>(),
        replacement in proptest::char::range(' ', '~'),
    ) {
        let options = options_for(Provider::Keeta);
        let key = secret_for(Provider::Keeta, b"key material");
        let signed = keeta::Keeta
            .sign(&keeta_envelope("1", &message), &key, &options, at(AT))
            .unwrap();
        let body = String::from_utf8(signed.body.clone().unwrap()).unwrap();
        let mut chars: Vec<char> = message.chars().collect();
        let i = position.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        let old = serde_json::to_string(&message).unwrap();
        let new = serde_json::to_string(&changed).unwrap();
        let tampered = body.replacen(&old, &new, 1);
        prop_assert_ne!(&tampered, &body);
        prop_assert_eq!(
            keeta::Keeta.verify(&signed.headers, tampered.as_bytes(), &[key], &options, at(AT)),
            Err(VerifyError::BadSignature)
        );
    }
}

/// What `for_account` takes from a Keeta account: its app id (review of
/// issue 15, finding 4) and, unless it sets one, the longer timestamp
/// tolerance that covers Keeta's re-sends (finding 8); other providers
/// keep five minutes.
#[test]
fn keeta_accounts_verify_with_their_app_id_and_a_longer_tolerance() {
    let toml = |keeta_extra: &str| {
        format!(
            r#"[[tenant]]
id = "acme"
backend_url = "http://127.0.0.1:9/orders"

[[account]]
id = "acme-careem"
provider = "careem"
tenant = "acme"
secret_envs = ["S"]

[[account]]
id = "acme-keeta"
provider = "keeta"
tenant = "acme"
secret_envs = ["S"]
webhook_url = "https://hub.example/api/webhooks/keeta/acme-keeta"
{keeta_extra}
"#
        )
    };
    let env = |_: &str| Some("a-secret-for-the-tests".to_owned());
    let options = |keeta_extra: &str, p: Provider| {
        let hub = crate::config::HubConfig::from_toml(&toml(keeta_extra), "test", &env)
            .expect("valid hub");
        VerifyOptions::for_account(hub.account(p, &format!("acme-{p}")).unwrap())
    };
    let minutes = |m: u64| std::time::Duration::from_secs(m * 60);

    let keeta = options("", Provider::Keeta);
    assert_eq!(keeta.timestamp_tolerance, minutes(15));
    assert_eq!(keeta.keeta_app_id, None);
    assert_eq!(
        options("", Provider::Careem).timestamp_tolerance,
        minutes(5)
    );
    let own = options(
        "timestamp_tolerance = \"20m\"\n[account.api]\nbase_url = \"https://open.mykeeta.com/api/open\"\napp_id = \"3762772727\"\nclient_secret_env = \"S\"\naccess_token_env = \"S\"\n",
        Provider::Keeta,
    );
    assert_eq!(own.timestamp_tolerance, minutes(20));
    assert_eq!(own.keeta_app_id.as_deref(), Some("3762772727"));
}
