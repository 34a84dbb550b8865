//! Settings: the one place that turns flags, environment and credential files into what the rest
//! of the program runs on.
//!
//! Owns precedence (flag > environment > credentials file > default), the credential file formats
//! and the [`Secret`] type. It leaves librdkafka's property names to [`crate::kafka::client_config`].

mod credentials;
mod rotation;
mod secret;
mod settings;

pub use credentials::{load as load_credentials, parse as parse_credentials, Credentials};
pub use rotation::{Identity, PasswordWatch, Probe};
pub use secret::Secret;
pub use settings::{
    read_password_file, CaSource, Cluster, ConsumerSettings, Isolation, LogLimit, Mode,
    MongoSettings, OutputSettings, PasswordFile, ProducerSettings, Protocol, Sasl, Settings,
    Source, Tls, TransactionSettings,
};
