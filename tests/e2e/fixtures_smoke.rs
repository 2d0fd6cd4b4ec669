//! The fixture images themselves work: the base builds, and nginx built on it answers HTTP.
//! If these fail, every other end-to-end test would fail for a reason that is not minify's.

use minify_fixtures::{
    BASE_IMAGE, TestContext, docker_run_http_check, fixture, image_size, require_docker,
    require_root,
};

#[test]
fn base_image_is_debian_bookworm() {
    if !require_root() || !require_docker() {
        return;
    }
    let base = fixture("base").expect("base fixture");
    assert_eq!(base, BASE_IMAGE);
    let ctx = TestContext::new().unwrap();
    let name = ctx.unique_name("base-smoke");
    ctx.track_container(&name);
    let out = minify_fixtures::docker(["run", "--name", &name, &base, "cat", "/etc/os-release"])
        .expect("run the base image");
    assert!(
        out.contains("VERSION_CODENAME=bookworm"),
        "/etc/os-release: {out}"
    );
}

#[test]
fn nginx_fixture_answers_http() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("nginx").expect("nginx fixture");
    assert_eq!(image, "minify-fixture/nginx:1");
    let answer = docker_run_http_check(&image, 80).expect("nginx answers");
    assert_eq!(answer.status, 200, "body: {}", answer.body);
    assert!(
        answer.body.contains("minify nginx fixture"),
        "body: {}",
        answer.body
    );
    // Built on the base, so at least as big as it.
    assert!(image_size(&image).unwrap() > image_size(BASE_IMAGE).unwrap());
}

#[test]
fn test_context_removes_its_containers() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("nginx").expect("nginx fixture");
    let id = {
        let ctx = TestContext::new().unwrap();
        let id = ctx.run_detached(&image, &[]).unwrap();
        assert!(ctx.container_running(&id));
        id
    };
    let left =
        minify_fixtures::docker(["ps", "-aq", "--no-trunc", "--filter", &format!("id={id}")])
            .unwrap();
    assert!(left.is_empty(), "container {id} survived its TestContext");
}
