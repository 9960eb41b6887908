// Empty: present so that the build-dependencies of Cargo.toml are resolved (feature unification).
fn main() {}
