//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic number giving the element
//! type and number of dimensions, then each dimension's size) followed by the raw elements.
//! Files may be gzipped (detected by the gzip magic bytes, not the file name).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::{Error, Result};

/// Unsigned-byte images, row-major, `count x rows x cols`.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.pixels_per_image();
        &self.pixels[index * n..(index + 1) * n]
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Data { path: path.to_owned(), message: message.into() }
}

/// An IDX file of unsigned bytes with `dims` dimensions: the size of each dimension, and the
/// data. Read as a stream (gunzipped on the way when the file starts with gzip's magic bytes):
/// the header first, then the data straight into a buffer of the size the header announces,
/// so that neither the compressed file nor the data is copied whole once more (47 MB for
/// Fashion-MNIST's training images, read before training can start).
fn read_idx(path: &Path, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let open = |source| Error::Read { path: path.to_owned(), source };
    let mut file = BufReader::new(File::open(path).map_err(open)?);
    let gzipped = file.fill_buf().map_err(open)?.starts_with(&[0x1f, 0x8b]);
    let mut stream: Box<dyn Read> = if gzipped { Box::new(GzDecoder::new(file)) } else { Box::new(file) };
    let broken = |e: std::io::Error| {
        if gzipped {
            bad(path, format!("corrupt or truncated gzip stream: {e}"))
        } else {
            Error::Read { path: path.to_owned(), source: e }
        }
    };
    let header = 4 + 4 * dims;
    let mut head = Vec::with_capacity(header);
    (&mut stream).take(header as u64).read_to_end(&mut head).map_err(broken)?;
    if head.len() < header {
        return Err(bad(path, format!("truncated IDX header: {} bytes, expected at least {header}", head.len())));
    }
    let word = |i: usize| u32::from_be_bytes(head[i..i + 4].try_into().expect("4 bytes")) as usize;
    let magic = word(0);
    let expected = 0x0800 + dims;
    if magic != expected {
        return Err(bad(
            path,
            format!("IDX magic number {magic:#010x}, expected {expected:#010x} (unsigned bytes, {dims} dimensions)"),
        ));
    }
    let sizes: Vec<usize> = (0..dims).map(|d| word(4 + 4 * d)).collect();
    let len: usize = sizes.iter().product();
    let mut data = Vec::with_capacity(len);
    (&mut stream).take(len as u64).read_to_end(&mut data).map_err(broken)?;
    // One byte more than announced is as wrong as one fewer.
    let extra = stream.read(&mut [0u8]).map_err(broken)?;
    if data.len() != len || extra > 0 {
        let found = if extra > 0 { format!("more than {len}") } else { data.len().to_string() };
        return Err(bad(
            path,
            format!("IDX data of {found} bytes, but the header {sizes:?} announces {len} (truncated or corrupt file)"),
        ));
    }
    Ok((sizes, data))
}

pub fn read_images(path: &Path) -> Result<Images> {
    let (sizes, pixels) = read_idx(path, 3)?;
    Ok(Images { count: sizes[0], rows: sizes[1], cols: sizes[2], pixels })
}

pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, 1)?.1)
}

/// Images with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub images: Images,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The train and test splits of an MNIST-format folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
}

/// Fashion-MNIST's class names, by label.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Where the full Fashion-MNIST lives once Debian's `dataset-fashion-mnist` is installed.
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The Fashion-MNIST subset shipped for tests and the demo.
pub fn shipped_subset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fashion-mnist")
}

/// The data used when none is named: Debian's Fashion-MNIST when installed, else the subset.
pub fn default_folder() -> PathBuf {
    let system = Path::new(SYSTEM_FASHION_MNIST);
    if system.join("train-images-idx3-ubyte.gz").exists() { system.to_owned() } else { shipped_subset() }
}

/// The folder an image stimulus names: `data` relative to the stimulus file, else the default.
pub fn stimulus_folder(data: Option<&str>, stimulus_path: Option<&Path>) -> PathBuf {
    match (data, stimulus_path) {
        (Some(rel), Some(stim)) => stim.parent().unwrap_or(Path::new(".")).join(rel),
        (Some(rel), None) => PathBuf::from(rel),
        (None, _) => default_folder(),
    }
}

/// `stem` or `stem.gz` inside `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() {
        Ok(gz)
    } else if plain.exists() {
        Ok(plain)
    } else {
        Err(bad(dir, format!("no {stem} or {stem}.gz in this folder (it needs the four MNIST-format IDX files)")))
    }
}

fn load_split(dir: &Path, images: &str, labels: &str) -> Result<Split> {
    let image_path = find(dir, images)?;
    let label_path = find(dir, labels)?;
    let images = read_images(&image_path)?;
    let labels = read_labels(&label_path)?;
    if images.count != labels.len() {
        return Err(bad(
            &label_path,
            format!("{} labels for {} images in {}", labels.len(), images.count, image_path.display()),
        ));
    }
    if let Some(bad_label) = labels.iter().find(|&&l| l > 9) {
        return Err(bad(&label_path, format!("label {bad_label} is outside 0..=9")));
    }
    Ok(Split { images, labels })
}

/// Loads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte` (each possibly `.gz`) from `dir`.
/// The two splits are read side by side, on two threads where there are two: decompressing
/// the training images is the longest part of starting a run.
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    let (train, test) = rayon::join(
        || load_split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        || load_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    );
    Ok(Dataset { train: train?, test: test? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzipped(path: &Path) -> Vec<u8> {
        let mut raw = Vec::new();
        GzDecoder::new(File::open(path).unwrap()).read_to_end(&mut raw).unwrap();
        raw
    }

    #[test]
    fn shipped_subset_loads() {
        let d = load_dir(&shipped_subset()).unwrap();
        assert_eq!((d.train.len(), d.test.len()), (3000, 1000));
        assert_eq!((d.train.images.rows, d.train.images.cols), (28, 28));
        // Every class is present in both splits.
        for split in [&d.train, &d.test] {
            let mut counts = [0; 10];
            split.labels.iter().for_each(|&l| counts[l as usize] += 1);
            assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        }
    }

    #[test]
    fn raw_and_gzipped_files_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let gz = shipped_subset().join("t10k-labels-idx1-ubyte.gz");
        let raw = gunzipped(&gz);
        let plain = dir.path().join("labels");
        std::fs::write(&plain, &raw).unwrap();
        assert_eq!(read_labels(&plain).unwrap(), read_labels(&gz).unwrap());
    }

    #[test]
    fn truncated_and_wrong_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let raw = gunzipped(&shipped_subset().join("t10k-images-idx3-ubyte.gz"));
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &raw[..raw.len() - 100]).unwrap();
        let err = read_images(&cut).unwrap_err().to_string();
        assert!(err.contains("cut") && err.contains("truncated"), "{err}");
        let long = dir.path().join("long");
        std::fs::write(&long, [&raw[..], &[0]].concat()).unwrap();
        let err = read_images(&long).unwrap_err().to_string();
        assert!(err.contains("long") && err.contains("more than"), "{err}");
        let short = dir.path().join("short");
        std::fs::write(&short, &raw[..10]).unwrap();
        assert!(read_images(&short).unwrap_err().to_string().contains("truncated IDX header"));
        let labels_as_images =
            read_images(&shipped_subset().join("t10k-labels-idx1-ubyte.gz")).unwrap_err().to_string();
        assert!(labels_as_images.contains("magic number"), "{labels_as_images}");
        let missing = load_dir(dir.path()).unwrap_err().to_string();
        assert!(missing.contains("train-images-idx3-ubyte"), "{missing}");
        let gz_cut = dir.path().join("gzcut");
        let gz = std::fs::read(shipped_subset().join("t10k-images-idx3-ubyte.gz")).unwrap();
        std::fs::write(&gz_cut, &gz[..gz.len() / 2]).unwrap();
        assert!(read_images(&gz_cut).unwrap_err().to_string().contains("gzip"));
    }
}
