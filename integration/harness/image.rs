//! Small random OCI images on disk (an OCI image layout skopeo reads as
//! `oci:DIR:TAG`), a plain-HTTP pusher, and skopeo run with private state.
//!
//! The layer is a one-file tar wrapped in gzip made of stored (uncompressed)
//! deflate blocks: a valid `tar+gzip` layer, so skopeo keeps it as is and
//! the manifest digest survives a push (skopeo would gzip a plain tar and
//! so change the digest).

use super::scrub_env;
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tempfile::TempDir;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const TAG: &str = "latest";

pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// An OCI image layout in a temp dir (tag [`TAG`]) and its parts.
pub struct OciImage {
    pub dir: TempDir,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    /// (digest, bytes) of the config blob, then the layer blob.
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl OciImage {
    /// A fresh image whose single layer holds a few KB of random bytes, so
    /// every call gives distinct digests.
    pub fn generate() -> Self {
        Self::generate_sized(4096)
    }

    /// A fresh image whose layer holds `size` random bytes.
    pub fn generate_sized(size: usize) -> Self {
        let mut content = vec![0u8; size];
        rand::rng().fill_bytes(&mut content);
        let tar = tar_one_file("random.bin", &content);
        let layer = gzip_stored(&tar);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&tar)]},
        }))
        .expect("JSON");
        let descriptor = |media_type: &str, data: &[u8]| json!({"mediaType": media_type, "digest": sha256_digest(data), "size": data.len()});
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor(CONFIG_TYPE, &config),
            "layers": [descriptor(LAYER_TYPE, &layer)],
        }))
        .expect("JSON");
        let mut index_entry = descriptor(MANIFEST_TYPE, &manifest);
        index_entry["annotations"] = json!({"org.opencontainers.image.ref.name": TAG});
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [index_entry]});

        let dir = tempfile::Builder::new()
            .prefix("it-image-")
            .tempdir()
            .expect("temp dir");
        let blob_dir = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blob_dir).expect("mkdir blobs");
        let blobs = vec![
            (sha256_digest(&config), config),
            (sha256_digest(&layer), layer),
        ];
        for data in blobs.iter().map(|(_, d)| d).chain([&manifest]) {
            let digest = sha256_digest(data);
            std::fs::write(blob_dir.join(&digest["sha256:".len()..]), data).expect("write blob");
        }
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("write index.json");
        OciImage {
            dir,
            manifest_digest: sha256_digest(&manifest),
            manifest,
            blobs,
        }
    }

    /// `oci:DIR:TAG` for skopeo.
    pub fn reference(&self) -> String {
        format!("oci:{}:{TAG}", self.dir.path().display())
    }

    /// The layout as an OCI image tar (what `ctr images import` and
    /// `docker load` read), written beside the layout; its path.
    pub fn archive(&self) -> PathBuf {
        let read =
            |name: &str| std::fs::read(self.dir.path().join(name)).expect("read layout file");
        let mut files: Vec<(String, Vec<u8>)> = vec![
            ("oci-layout".into(), read("oci-layout")),
            ("index.json".into(), read("index.json")),
        ];
        for data in self.blobs.iter().map(|(_, d)| d).chain([&self.manifest]) {
            let name = format!("blobs/sha256/{}", &sha256_digest(data)["sha256:".len()..]);
            files.push((name, data.clone()));
        }
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let path = self.dir.path().join("image.tar");
        std::fs::write(&path, tar_files(&entries)).expect("write image tar");
        path
    }
}

/// An OCI layout that skopeo wrote (a pull).
pub struct PulledLayout {
    pub dir: TempDir,
}

impl PulledLayout {
    /// The digest of the manifest the layout's index.json names.
    pub fn digest(&self) -> String {
        layout_digest(self.dir.path())
    }
}

pub fn layout_digest(dir: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest in {index}"))
        .to_string()
}

/// A one-file ustar archive: header, content padded to 512, two zero blocks.
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    tar_files(&[(name, content)])
}

/// A ustar archive of regular files (names up to 100 bytes; parent
/// directories implied), each padded to 512, then two zero blocks.
pub fn tar_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, content) in files {
        assert!(name.len() < 100, "tar name too long: {name}");
        let mut header = [0u8; 512];
        let mut put = |offset: usize, field: &[u8]| {
            header[offset..offset + field.len()].copy_from_slice(field)
        };
        put(0, name.as_bytes());
        put(100, b"0000644\0");
        put(108, b"0000000\0");
        put(116, b"0000000\0");
        put(124, format!("{:011o}\0", content.len()).as_bytes());
        put(136, b"07032474600\0"); // mtime: 2000-01-01
        put(156, b"0");
        put(257, b"ustar\0");
        put(263, b"00");
        header[148..156].copy_from_slice(b"        ");
        let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&header);
        tar.extend_from_slice(content);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// gzip (RFC 1952) around deflate stored blocks (RFC 1951, BTYPE=00).
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len())); // BFINAL on the last block
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    // Table-driven: large layers are checksummed in unoptimized test builds.
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    let mut crc = !0u32;
    for byte in data {
        crc = table[((crc ^ u32::from(*byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[test]
fn crc32_matches_the_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

/// Pushes `image` as `repo:tag` with the registry HTTP API (blob upload by
/// POST then PUT to the returned `Location`, then the manifest), asserting
/// every step. `base` is the registry's or the gate's URL.
pub async fn push_http(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    bearer: Option<&str>,
    image: &OciImage,
) {
    let auth = |req: reqwest::RequestBuilder| match bearer {
        Some(token) => req.bearer_auth(token),
        None => req,
    };
    for (digest, data) in &image.blobs {
        let resp = auth(client.post(format!("{base}/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("start upload");
        assert_eq!(resp.status(), 202, "start upload: {:?}", resp.text().await);
        let location = resp.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_string();
        let mut url = reqwest::Url::parse(base)
            .and_then(|b| b.join(&location))
            .expect("upload location");
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = auth(client.put(url))
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(resp.status(), 201, "finish upload: {:?}", resp.text().await);
    }
    let resp = auth(client.put(format!("{base}/v2/{repo}/manifests/{tag}")))
        .header("content-type", MANIFEST_TYPE)
        .body(image.manifest.clone())
        .send()
        .await
        .expect("put manifest");
    assert_eq!(resp.status(), 201, "put manifest: {:?}", resp.text().await);
}

/// skopeo with its own HOME, XDG_RUNTIME_DIR, auth file and trust policy, so
/// no credentials or settings leak in from the machine or between tests.
pub struct Skopeo {
    home: TempDir,
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

impl Skopeo {
    pub fn new() -> Self {
        let home = tempfile::Builder::new()
            .prefix("it-skopeo-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(
            home.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy.json");
        std::fs::create_dir_all(home.path().join("run")).expect("mkdir run");
        Skopeo { home }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs `skopeo --policy P <args>`; the Output, whatever the exit code.
    pub async fn run(&self, args: &[String]) -> Output {
        self.run_with_input(args, None).await
    }

    /// Like [`Self::run`], with `stdin` fed to skopeo (`--password-stdin`).
    pub async fn run_with_input(&self, args: &[String], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("skopeo");
        scrub_env(&mut cmd);
        cmd.env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.home().join("run"))
            .env("XDG_CONFIG_HOME", self.home().join("config"))
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("DOCKER_CONFIG", self.home().join("docker-config"))
            .env("TMPDIR", self.home())
            .arg("--policy")
            .arg(self.home().join("policy.json"))
            .args(args);
        super::run_tool(cmd, stdin, Duration::from_secs(120)).await
    }

    /// Where `skopeo login` keeps credentials (`REGISTRY_AUTH_FILE`).
    pub fn auth_file(&self) -> PathBuf {
        self.home().join("auth.json")
    }

    /// `skopeo copy oci:DIR:TAG docker://DEST` (DEST = host:port/repo:tag).
    pub async fn push(&self, image: &OciImage, dest: &str, creds: Option<(&str, &str)>) -> Output {
        let mut args = strings(&[
            "copy",
            "--retry-times",
            "0",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        args.extend(creds_args("--dest-creds", creds));
        args.extend([image.reference(), format!("docker://{dest}")]);
        self.run(&args).await
    }

    /// `skopeo copy docker://SRC oci:NEWDIR:TAG`; the Output and the layout.
    pub async fn pull(&self, src: &str, creds: Option<(&str, &str)>) -> (Output, PulledLayout) {
        let dir = tempfile::Builder::new()
            .prefix("it-pulled-")
            .tempdir()
            .expect("temp dir");
        let mut args = strings(&[
            "copy",
            "--retry-times",
            "0",
            "--preserve-digests",
            "--src-tls-verify=false",
        ]);
        args.extend(creds_args("--src-creds", creds));
        args.extend([
            format!("docker://{src}"),
            format!("oci:{}:{TAG}", dir.path().display()),
        ]);
        (self.run(&args).await, PulledLayout { dir })
    }

    /// `skopeo inspect --format {{.Digest}} docker://SRC`, asserting success.
    pub async fn inspect_digest(&self, src: &str, creds: Option<(&str, &str)>) -> String {
        let mut args = strings(&[
            "inspect",
            "--retry-times",
            "0",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
        ]);
        args.extend(creds_args("--creds", creds));
        args.push(format!("docker://{src}"));
        let out = self.run(&args).await;
        assert!(
            out.status.success(),
            "skopeo inspect {src}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `skopeo inspect --raw docker://SRC`: the manifest bytes, asserting success.
    pub async fn inspect_raw(&self, src: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
        let mut args = strings(&[
            "inspect",
            "--retry-times",
            "0",
            "--tls-verify=false",
            "--raw",
        ]);
        args.extend(creds_args("--creds", creds));
        args.push(format!("docker://{src}"));
        let out = self.run(&args).await;
        assert!(
            out.status.success(),
            "skopeo inspect --raw {src}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home().to_path_buf()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn creds_args(flag: &str, creds: Option<(&str, &str)>) -> Vec<String> {
    creds
        .map(|(user, pass)| vec![flag.to_string(), format!("{user}:{pass}")])
        .unwrap_or_default()
}
