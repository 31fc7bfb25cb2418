//! The AWS clients, built once per process (or Lambda cold start) and shared.

use crate::CallCounter;
use aws_config::{BehaviorVersion, Region};

/// Where the aws shape's resources are.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// An endpoint for every service instead of AWS's own (an emulator).
    pub endpoint_url: Option<String>,
    /// The region; from the environment's AWS configuration when unset.
    pub region: Option<String>,
    /// The DynamoDB table.
    pub table: String,
    /// The prefix of every queue's name.
    pub queue_prefix: String,
    /// The bucket of the object store.
    pub bucket: String,
    /// An access key id and secret instead of the environment's credentials (an emulator).
    pub credentials: Option<(String, String)>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            endpoint_url: None,
            region: None,
            table: "wharf".into(),
            queue_prefix: "wharf".into(),
            bucket: "wharf-objects".into(),
            credentials: None,
        }
    }
}

/// The service clients, sharing one configuration and one call counter.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The table's stream (read by `wharf serve --backend aws` in place of Lambda).
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub cognito: aws_sdk_cognitoidentityprovider::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub s3: aws_sdk_s3::Client,
    pub calls: CallCounter,
    pub settings: AwsSettings,
    shared: aws_config::SdkConfig,
}

impl Clients {
    /// Loads the AWS configuration (credentials and region from the environment, as the SDK
    /// does) and builds the clients.
    pub async fn connect(settings: AwsSettings) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((id, secret)) = &settings.credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "wharf-settings",
            ));
        }
        let shared = loader.load().await;
        let calls = CallCounter::default();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&shared)
                .interceptor(calls.clone())
                .build(),
        );
        let streams = aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(&shared)
                .interceptor(calls.clone())
                .build(),
        );
        let cognito = aws_sdk_cognitoidentityprovider::Client::from_conf(
            aws_sdk_cognitoidentityprovider::config::Builder::from(&shared)
                .interceptor(calls.clone())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&shared)
                .interceptor(calls.clone())
                .build(),
        );
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(&shared)
                .interceptor(calls.clone())
                .build(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .interceptor(calls.clone())
                // Emulators serve buckets under the path, not as host names.
                .force_path_style(settings.endpoint_url.is_some())
                .build(),
        );
        Clients {
            dynamodb,
            streams,
            s3,
            cognito,
            sqs,
            sns,
            calls,
            settings,
            shared,
        }
    }

    /// A client of API Gateway's management API for the WebSocket API at `endpoint`
    /// (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
    pub fn websocket(&self, endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
        aws_sdk_apigatewaymanagement::Client::from_conf(
            aws_sdk_apigatewaymanagement::config::Builder::from(&self.shared)
                .endpoint_url(endpoint)
                .interceptor(self.calls.clone())
                .build(),
        )
    }
}
