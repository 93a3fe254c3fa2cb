//! Where each replica's credentials come from (issue 14), resolved from the
//! config into a [`ReplicaCredentials`] of the middleware crate.
//!
//! | config | source |
//! |---|---|
//! | `anonymous: true` | unsigned requests |
//! | `access_key` + `secret_key` (+ `session_token`) | those keys, fixed |
//! | neither | the AWS SDK's default provider chain, in its documented order: environment, shared config/credentials files (`AWS_PROFILE`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: EKS IRSA), container credentials (ECS, EKS Pod Identity), EC2 IMDSv2 |
//! | `role_arn` (+ `external_id`, `session_name`) | STS `AssumeRole` with the keys above (or the chain's) |
//!
//! The AWS SDK lives here, in the binary, rather than in the middleware
//! crate: the middleware only needs "the current keys", and other users of
//! the layers need not compile the SDK. Temporary keys are refreshed in the
//! background by [`ReplicaCredentials::refreshing`].
//!
//! A reload builds every replica's credentials anew, but when the new ones
//! cannot be fetched (the metadata endpoint or STS is down for a moment) and
//! the running config's, from the same settings, are still valid, those stay
//! in use: a reload never turns working keys into an outage.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use futures_util::future::BoxFuture;
use yatagarasu_middleware::credentials::{
    BoxError, CredentialSource, Fetched, RefreshPolicy, ReplicaCredentials, WeakReplicaCredentials,
};

use crate::config::ResolvedReplica;

/// A replica's AWS SDK credentials provider as a [`CredentialSource`], built
/// anew for every fetch: the SDK's profile provider reads the shared
/// config/credentials files once per provider, so keys rotated in
/// `~/.aws/credentials` (or a base profile of a role) would otherwise never
/// be read again.
struct AwsSource(ResolvedReplica);

impl CredentialSource for AwsSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched, BoxError>> {
        Box::pin(async move {
            let c = provider(&self.0).await.provide_credentials().await?;
            let keys = match c.session_token() {
                Some(token) => rusty_s3::Credentials::new_with_token(c.access_key_id(), c.secret_access_key(), token),
                None => rusty_s3::Credentials::new(c.access_key_id(), c.secret_access_key()),
            };
            Ok(Fetched::new(keys, c.expiry()))
        })
    }
}

/// The credentials of a replica, fetched once now when they come from the
/// AWS chain or STS (a failure is logged and retried in the background).
pub async fn for_replica(bucket: &str, r: &ResolvedReplica) -> ReplicaCredentials {
    if r.anonymous {
        return ReplicaCredentials::anonymous();
    }
    let fixed = r.credentials.as_ref().map(|(access, secret)| match &r.session_token {
        Some(token) => rusty_s3::Credentials::new_with_token(access.expose(), secret.expose(), token.expose()),
        None => rusty_s3::Credentials::new(access.expose(), secret.expose()),
    });
    if let (Some(keys), None) = (&fixed, &r.role) {
        return ReplicaCredentials::fixed(keys.clone());
    }
    let name = format!("{bucket}/{}", r.name);
    let source = Arc::new(AwsSource(r.clone()));
    let fresh = ReplicaCredentials::refreshing(name.clone(), source, RefreshPolicy::default()).await;
    keep_running(name, source_digest(r), fresh)
}

/// The SDK provider of a replica without fixed keys: the default chain or the
/// config's keys, then `role_arn` assumed through STS.
async fn provider(r: &ResolvedReplica) -> SharedCredentialsProvider {
    let region = Region::new(r.region.clone());
    let base = match &r.credentials {
        Some((access, secret)) => SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            access.expose(),
            secret.expose(),
            r.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "yatagarasu-config",
        )),
        None => SharedCredentialsProvider::new(DefaultCredentialsChain::builder().region(region.clone()).build().await),
    };
    let Some(role) = &r.role else {
        return base;
    };
    // The SDK config from the environment brings the STS endpoint
    // overrides (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`).
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .credentials_provider(base)
        .load()
        .await;
    let mut builder = AssumeRoleProvider::builder(role.arn.clone())
        .session_name(role.session_name.clone())
        .region(region)
        .configure(&sdk);
    if let Some(id) = &role.external_id {
        builder = builder.external_id(id.expose());
    }
    SharedCredentialsProvider::new(builder.build().await)
}

/// The refreshing credentials of each replica (`bucket/replica`) in use, with
/// a digest of the settings they come from; weak, so the credentials of a
/// config no longer in use stop refreshing.
static RUNNING: Mutex<BTreeMap<String, (u64, WeakReplicaCredentials)>> = Mutex::new(BTreeMap::new());

/// `fresh`, or the running credentials of the same replica and settings when
/// `fresh` has no usable keys and they do (a reload during an outage of the
/// credential source).
fn keep_running(name: String, digest: u64, fresh: ReplicaCredentials) -> ReplicaCredentials {
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.retain(|_, (_, weak)| weak.upgrade().is_some());
    if fresh.current().is_err() {
        let same = running.get(&name).filter(|(d, _)| *d == digest);
        if let Some(current) = same.and_then(|(_, weak)| weak.upgrade()) {
            if current.current().is_ok() {
                tracing::warn!(
                    replica = %name,
                    "new credentials could not be fetched: the running ones, still valid, stay in use and keep refreshing"
                );
                return current;
            }
        }
    }
    running.insert(name, (digest, fresh.downgrade()));
    fresh
}

/// A digest of what a replica's credentials come from (never the settings themselves).
fn source_digest(r: &ResolvedReplica) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    let role = r.role.as_ref();
    for part in [
        Some(r.region.as_str()),
        r.credentials.as_ref().map(|(access, _)| access.expose()),
        r.credentials.as_ref().map(|(_, secret)| secret.expose()),
        r.session_token.as_ref().map(|t| t.expose()),
        role.map(|x| x.arn.as_str()),
        role.and_then(|x| x.external_id.as_ref()).map(|e| e.expose()),
        role.map(|x| x.session_name.as_str()),
    ] {
        part.hash(&mut h);
    }
    h.finish()
}

/// Which source a replica will use, for `yatagarasu check` (no secret, no
/// network: the AWS chain's pick is read from the environment as the chain
/// would, first match wins).
pub fn describe(r: &ResolvedReplica) -> String {
    let base = if r.anonymous {
        return "anonymous (unsigned requests)".into();
    } else if r.credentials.is_some() {
        if r.session_token.is_some() {
            "static keys from the config, with a session token".to_owned()
        } else {
            "static keys from the config".to_owned()
        }
    } else {
        format!("AWS default chain ({})", chain_guess())
    };
    match &r.role {
        Some(role) => format!("{base}, then STS AssumeRole {}", role.arn),
        None => base,
    }
}

fn chain_guess() -> &'static str {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let file = |var: &str, default: &str| match std::env::var_os(var) {
        Some(p) => std::path::Path::new(&p).exists(),
        None => std::env::var_os("HOME").is_some_and(|h| std::path::Path::new(&h).join(default).exists()),
    };
    if set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY") {
        "would use: environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    } else if file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials") || file("AWS_CONFIG_FILE", ".aws/config") {
        "would use: shared config/credentials files (profile from AWS_PROFILE, else default)"
    } else if set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN") {
        "would use: web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN; EKS IRSA)"
    } else if set("AWS_CONTAINER_CREDENTIALS_FULL_URI") || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        "would use: container credentials endpoint (ECS task role, EKS Pod Identity)"
    } else {
        "would use: EC2 instance metadata (IMDSv2), nothing else is configured here"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of a process whose only credential source is the
    /// shared credentials file `file` (nextest runs each test in its own
    /// process).
    fn only_the_credentials_file(file: &std::path::Path, home: &std::path::Path) {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                std::env::remove_var(k);
            }
        }
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", file);
        std::env::set_var("AWS_CONFIG_FILE", home.join("no-config"));
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("HOME", home);
    }

    #[tokio::test]
    async fn keys_rotated_in_the_shared_credentials_file_are_read_at_the_next_fetch() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("credentials");
        let write = |key: &str| {
            std::fs::write(
                &file,
                format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = secret-of-{key}\n"),
            )
            .unwrap()
        };
        write("AKIAFIRSTKEY0001");
        only_the_credentials_file(&file, home.path());
        let config = crate::config::load_str(
            "buckets: [{ name: b, path_prefix: /b, s3: { bucket: b, region: us-east-1 } }]",
            "test",
            &|_| None,
        )
        .unwrap();
        let replica = config.buckets[0].s3.resolved_replicas().remove(0);
        let source = AwsSource(replica);
        let key = |f: Fetched| f.credentials.key().to_owned();
        assert_eq!(key(source.fetch().await.unwrap()), "AKIAFIRSTKEY0001");
        write("AKIASECONDKEY002");
        assert_eq!(key(source.fetch().await.unwrap()), "AKIASECONDKEY002");
    }
}
