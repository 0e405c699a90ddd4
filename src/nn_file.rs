//! A network's training data read from Parquet one row group at a time: the encoder is
//! fitted in two passes over the row groups, and training reads them again when it needs
//! them (every epoch, for data larger than the shuffle window), so neither the file's
//! columns nor its encoded rows need to be in memory at once.

use crate::gbdt::data::{from_batches, Columns, Dataset};
use crate::gbdt::package::{DataFingerprint, FingerprintBuilder};
use crate::models::ModelError;
use crate::nn::{Block, Encoded, Encoder, NnError, NnParams, Source};
use crate::store::parquet_io::{ParquetFile, ScanOptions};
use crate::store::resolve_parquet;

/// The row groups of one Parquet file or of every file under a prefix.
pub struct ParquetRows {
    /// Each file opened once (its size and footer), so that reading a row group fetches
    /// only its column chunks: every epoch of streamed training reads every row group.
    files: Vec<ParquetFile>,
    /// (file, row group, rows), in the files' and the groups' order; empty groups left out.
    groups: Vec<(usize, usize, usize)>,
    cols: Columns,
    opts: ScanOptions,
}

impl ParquetRows {
    /// Reads the footers of the file(s) at `url`.
    pub async fn open(url: &str, cols: &Columns) -> Result<ParquetRows, ModelError> {
        let (lake, files) = resolve_parquet(url).await?;
        let mut groups = Vec::new();
        let mut opened = Vec::with_capacity(files.len());
        for f in files {
            let file = ParquetFile::open(&lake, &f).await?;
            for (g, rows) in file.row_group_rows()?.into_iter().enumerate() {
                if rows > 0 {
                    groups.push((opened.len(), g, rows));
                }
            }
            opened.push(file);
        }
        if groups.is_empty() {
            return Err(ModelError::Invalid(format!("{url}: no rows")));
        }
        // Only the columns a dataset is built from, when the features are named.
        let columns = cols.features.as_ref().map(|f| {
            let mut c = f.clone();
            c.push(cols.target.clone());
            c
        });
        Ok(ParquetRows {
            files: opened,
            groups,
            cols: cols.clone(),
            opts: ScanOptions {
                columns,
                ..ScanOptions::default()
            },
        })
    }

    pub fn n_rows(&self) -> usize {
        self.groups.iter().map(|g| g.2).sum()
    }

    pub fn n_blocks(&self) -> usize {
        self.groups.len()
    }

    /// "file row group g": where block `i` is, for messages.
    pub fn describe(&self, i: usize) -> String {
        let (f, g, _) = &self.groups[i];
        format!("{} row group {g}", self.files[*f].url())
    }

    /// Block `i` as a dataset (features and target).
    pub async fn dataset(&self, i: usize) -> Result<Dataset, ModelError> {
        let (f, g, rows) = &self.groups[i];
        let batches = self.files[*f].read_row_group(*g, &self.opts).await?;
        let what = self.describe(i);
        let d = from_batches(&batches, &self.cols, &what)?;
        if d.n_rows() != *rows {
            return Err(ModelError::Invalid(format!(
                "{what}: {} rows read, {rows} declared",
                d.n_rows()
            )));
        }
        // Networks train in 32-bit floats: a target past f32's range would become inf.
        if let Some(r) = d.target.iter().position(|v| v.abs() > f64::from(f32::MAX)) {
            return Err(ModelError::Invalid(format!(
                "{what}: column `{}`: row {r}: target {:e} does not fit the network's 32-bit \
                 floats",
                self.cols.target, d.target[r]
            )));
        }
        Ok(d)
    }

    /// Fits the network's encoder (two passes) and the data's fingerprint.
    pub async fn fit_encoder(
        &self,
        params: &NnParams,
    ) -> Result<(Encoder, DataFingerprint), ModelError> {
        let mut fit = crate::nn::data::EncoderFit::new(
            self.n_rows(),
            params.embedding_dim,
            params.max_embedding_dim,
            params.numeric_bins,
        );
        let mut fp = FingerprintBuilder::default();
        for i in 0..self.n_blocks() {
            let d = self.dataset(i).await?;
            fit.observe(&d).map_err(|e| self.block_error(i, e))?;
            fp.push(&d);
        }
        fit.second_pass();
        for i in 0..self.n_blocks() {
            let d = self.dataset(i).await?;
            fit.observe(&d).map_err(|e| self.block_error(i, e))?;
        }
        Ok((fit.finish()?, fp.finish()))
    }

    /// Every row encoded, in order (for data that is shuffled as a whole).
    pub async fn encode_all(&self, enc: &Encoder) -> Result<(Encoded, Vec<f32>), ModelError> {
        let mut x = Encoded::default();
        let mut y = Vec::with_capacity(self.n_rows());
        for i in 0..self.n_blocks() {
            let d = self.dataset(i).await?;
            x.append(&enc.encode(&d).map_err(|e| self.block_error(i, e))?);
            y.extend(d.target.iter().map(|v| *v as f32));
        }
        Ok((x, y))
    }

    /// The rows as a network's [`Source`]: held encoded when there are at most `window`
    /// of them (or `window` is 0), else read a row group at a time when training asks.
    pub async fn source<'a>(
        &'a self,
        enc: &'a Encoder,
        window: usize,
    ) -> Result<FileSource<'a>, ModelError> {
        Ok(if window == 0 || self.n_rows() <= window {
            let (x, y) = self.encode_all(enc).await?;
            FileSource::Held(x, y)
        } else {
            FileSource::Streamed(Streamed::new(self, enc))
        })
    }

    fn block_error(&self, i: usize, e: NnError) -> ModelError {
        ModelError::Nn(NnError::Read {
            what: self.describe(i),
            user_error: e.is_user_error(),
            source: Box::new(e),
        })
    }
}

/// A file's rows for training: held encoded, or streamed.
pub enum FileSource<'a> {
    Held(Encoded, Vec<f32>),
    Streamed(Streamed<'a>),
}

impl FileSource<'_> {
    pub fn is_streamed(&self) -> bool {
        matches!(self, FileSource::Streamed(_))
    }
}

impl Source for FileSource<'_> {
    fn block_rows(&self) -> Vec<usize> {
        match self {
            FileSource::Held(x, _) => vec![x.n_rows],
            FileSource::Streamed(s) => s.block_rows(),
        }
    }

    fn block(&self, i: usize) -> Result<Block<'_>, NnError> {
        match self {
            FileSource::Held(x, y) if i == 0 => Ok(Block {
                x: std::borrow::Cow::Borrowed(x),
                y: std::borrow::Cow::Borrowed(y),
            }),
            FileSource::Held(..) => Err(NnError::Data(format!("block {i} of held rows"))),
            FileSource::Streamed(s) => s.block(i),
        }
    }
}

/// Row groups read and encoded when training asks for them (from any thread: the reads
/// run on the process's async runtime).
pub struct Streamed<'a> {
    rows: &'a ParquetRows,
    enc: &'a Encoder,
    runtime: tokio::runtime::Handle,
}

impl<'a> Streamed<'a> {
    /// Must be called on the async runtime (it keeps a handle to it).
    pub fn new(rows: &'a ParquetRows, enc: &'a Encoder) -> Streamed<'a> {
        Streamed {
            rows,
            enc,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Source for Streamed<'_> {
    fn block_rows(&self) -> Vec<usize> {
        self.rows.groups.iter().map(|g| g.2).collect()
    }

    fn block(&self, i: usize) -> Result<Block<'_>, NnError> {
        if i >= self.rows.n_blocks() {
            return Err(NnError::Data(format!(
                "block {i} of {}",
                self.rows.n_blocks()
            )));
        }
        let d = self
            .runtime
            .block_on(self.rows.dataset(i))
            .map_err(|e| NnError::Read {
                what: self.rows.describe(i),
                user_error: e.is_user_error(),
                source: Box::new(e),
            })?;
        let x = self.enc.encode(&d).map_err(|e| NnError::Read {
            what: self.rows.describe(i),
            user_error: e.is_user_error(),
            source: Box::new(e),
        })?;
        Ok(Block {
            x: std::borrow::Cow::Owned(x),
            y: std::borrow::Cow::Owned(d.target.iter().map(|v| *v as f32).collect()),
        })
    }
}
