//! The workspace builds reqwest from `vendor/reqwest`, patched to skip two
//! URL re-parses per request when no redirect happened (issue 13; see
//! `vendor/README.md`). These tests hold the patched client to reqwest's
//! behaviour where the patch could have changed it: the URL a response
//! reports, with and without redirects, and the credentials dropped on a
//! redirect to another host. A real server on 127.0.0.1 answers.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

/// `/a` redirects to `/b` on the same host, `/x` to `/b` on `localhost`
/// (another host for reqwest), `/b` answers whether it got an
/// `Authorization` header.
async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/a", get(|| async { Redirect::to("/b?after=1") }))
        .route(
            "/x",
            get(move || async move { Redirect::to(&format!("http://localhost:{}/b", addr.port())) }),
        )
        .route(
            "/b",
            get(|headers: HeaderMap| async move {
                let auth = headers.contains_key(header::AUTHORIZATION);
                (StatusCode::OK, format!("b auth={auth}")).into_response()
            }),
        )
        .fallback(|| async { "other" });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn a_response_reports_the_url_it_was_asked_for_when_not_redirected() {
    let addr = serve().await;
    // A presigned-style query, as the upstream sends.
    let url = format!(
        "http://{addr}/bucket/some%20key.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261128%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00ff"
    );
    let res = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(res.url().as_str(), url);
    assert_eq!(res.text().await.unwrap(), "other");
}

#[tokio::test]
async fn a_followed_redirect_reports_the_final_url() {
    let addr = serve().await;
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/a"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(res.url().as_str(), format!("http://{addr}/b?after=1"));
    // Same host: the credentials follow.
    assert_eq!(res.text().await.unwrap(), "b auth=true");
}

#[tokio::test]
async fn a_redirect_to_another_host_drops_the_credentials() {
    let addr = serve().await;
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/x"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(res.url().as_str(), format!("http://localhost:{}/b", addr.port()));
    assert_eq!(res.text().await.unwrap(), "b auth=false");
}

#[tokio::test]
async fn with_redirects_off_the_redirect_is_the_answer() {
    let addr = serve().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(format!("http://{addr}/a")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.url().as_str(), format!("http://{addr}/a"));
}
