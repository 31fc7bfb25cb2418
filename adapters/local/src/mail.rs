//! Email: through an SMTP server when one is configured (lettre), otherwise written as
//! `.eml` files to the `outbox` folder of the data dir, so the email channel works on a laptop
//! with no mail server and what would have been sent can be read.

use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use wharf_core::CoreError;
use wharf_core::domain::Email;
use wharf_core::ports::Mailer;

/// How to reach the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection (a local relay).
    None,
    /// STARTTLS after connecting.
    StartTls,
    /// TLS from the start.
    Tls,
}

/// Sends through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// A mailer for `host:port`.
    pub fn new(
        host: &str,
        port: u16,
        security: SmtpSecurity,
        credentials: Option<(String, String)>,
        from: &str,
    ) -> Result<Self, CoreError> {
        let builder = match security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(CoreError::internal)?,
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(CoreError::internal)?
            }
        };
        let mut builder = builder
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(20)));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        let from = from
            .parse()
            .map_err(|e| CoreError::invalid("smtp.from", format!("is not a mailbox: {e}")))?;
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
        })
    }
}

fn message(from: &Mailbox, to: &Email, subject: &str, body: &str) -> Result<Message, CoreError> {
    let to: Mailbox = to
        .as_str()
        .parse()
        .map_err(|e| CoreError::internal(format!("bad recipient: {e}")))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .map_err(CoreError::internal)
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, to: &Email, subject: &str, body: &str) -> Result<(), CoreError> {
        let email = message(&self.from, to, subject, body)?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| CoreError::unavailable(format!("the mail server refused: {e}")))
    }
}

/// Writes each message as an `.eml` file to a folder.
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxMailer {
    /// An outbox in `dir` (created when missing).
    pub fn new(dir: PathBuf, from: &str) -> Result<Self, CoreError> {
        crate::create_private_dir(&dir).map_err(CoreError::internal)?;
        let from = from
            .parse()
            .map_err(|e| CoreError::invalid("smtp.from", format!("is not a mailbox: {e}")))?;
        Ok(OutboxMailer { dir, from })
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, to: &Email, subject: &str, body: &str) -> Result<(), CoreError> {
        let email = message(&self.from, to, subject, body)?;
        let name = format!(
            "{}-{}.eml",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
            wharf_core::credentials::random_token(6)?
        );
        let path = self.dir.join(name);
        let bytes = email.formatted();
        tokio::task::spawn_blocking(move || std::fs::write(&path, bytes))
            .await
            .map_err(CoreError::internal)?
            .map_err(|e| CoreError::unavailable(format!("cannot write to the outbox: {e}")))
    }
}
