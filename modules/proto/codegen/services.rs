//! Build-time generator: from a service in a compiled .proto (its file
//! descriptor set), writes the Rust side of the contract once, so no RPC is
//! ever copied by hand:
//!
//! - `trait <Trait>`: one async method per RPC, taking the call's
//!   `CallContext` and the request message (or a `ServiceStream` of them),
//!   answering the response message (or a stream);
//! - `<Prefix>Client`: the cloneable handle every caller uses, local (an
//!   `Arc` of any implementation) or remote (the gRPC client), behind one type;
//! - `<Prefix>GrpcClient`: the trait over tonic's client, writing the context
//!   as metadata and reading reply notes and typed errors back;
//! - `<Prefix>GrpcAdapter` and `<prefix>_grpc_server()`: tonic's server trait
//!   over any implementation, reading the context from the metadata;
//! - `<Prefix>Observed`: a decorator telling a `CallObserver` (metrics) of
//!   every call, its RPC name, request, time and outcome.
//!
//! Only the shapes of calls (unary, client, server or bidirectional
//! streaming) are known here; what they do lives in `src/rpc.rs` at run time.

use std::fmt::Write as _;

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost::Message;
use prost_types::{FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto};

/// One service to generate.
pub struct Spec {
    /// Fully qualified proto name, e.g. `inference.GRPCInferenceService`.
    pub proto: &'static str,
    /// Rust path of the module holding the package's generated messages.
    pub messages: &'static str,
    /// The trait's name.
    pub trait_name: &'static str,
    /// Prefix of the generated types (`<Prefix>Client`, ...).
    pub prefix: &'static str,
    /// RPCs with a default body answering UNIMPLEMENTED.
    pub optional: &'static [&'static str],
    /// File written into OUT_DIR.
    pub out_file: &'static str,
}

struct Method<'a> {
    rpc: &'a str,
    name: String,
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
    doc: String,
    optional: bool,
}

/// Generates every spec found in the descriptor set at `descriptors`.
pub fn generate(descriptors: &[u8], specs: &[Spec], out_dir: &std::path::Path) {
    let set = FileDescriptorSet::decode(descriptors).expect("a valid file descriptor set");
    for spec in specs {
        let (package, service_name) = spec.proto.rsplit_once('.').expect("package.Service");
        let (file, index, service) = set
            .file
            .iter()
            .filter(|f| f.package() == package)
            .find_map(|f| {
                f.service
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.name() == service_name)
                    .map(|(i, s)| (f, i, s))
            })
            .unwrap_or_else(|| panic!("service {} not in the descriptors", spec.proto));
        let comments = |path: &[i32]| -> String {
            file.source_code_info
                .as_ref()
                .and_then(|info| info.location.iter().find(|l| l.path == path))
                .and_then(|l| l.leading_comments.clone())
                .unwrap_or_default()
        };
        let methods: Vec<Method> = service
            .method
            .iter()
            .enumerate()
            .map(|(m, method)| {
                let doc = comments(&[6, index as i32, 2, m as i32]);
                describe(spec, method, doc)
            })
            .collect();
        let code = render(spec, service, &methods, &comments(&[6, index as i32]));
        std::fs::write(out_dir.join(spec.out_file), code).expect("write generated service");
    }
}

fn describe<'a>(spec: &Spec, method: &'a MethodDescriptorProto, doc: String) -> Method<'a> {
    Method {
        rpc: method.name(),
        name: method.name().to_snake_case(),
        input: rust_type(spec, method.input_type()),
        output: rust_type(spec, method.output_type()),
        client_streaming: method.client_streaming(),
        server_streaming: method.server_streaming(),
        doc,
        optional: spec.optional.contains(&method.name()),
    }
}

/// `.package.Outer.Inner` as a Rust path under the messages module.
fn rust_type(spec: &Spec, proto: &str) -> String {
    let (package, _) = spec.proto.rsplit_once('.').expect("package.Service");
    let local = proto
        .strip_prefix('.')
        .and_then(|p| p.strip_prefix(package))
        .and_then(|p| p.strip_prefix('.'))
        .unwrap_or_else(|| panic!("{proto} is not in package {package}"));
    let mut parts: Vec<String> = local.split('.').map(str::to_string).collect();
    let last = parts.pop().expect("a type name").to_upper_camel_case();
    let mut path = spec.messages.to_string();
    for outer in parts {
        path.push_str("::");
        path.push_str(&outer.to_snake_case());
    }
    format!("{path}::{last}")
}

fn doc_lines(out: &mut String, indent: &str, doc: &str, fallback: &str) {
    let text = if doc.trim().is_empty() {
        fallback.to_string()
    } else {
        doc.to_string()
    };
    for line in text.trim_end().lines() {
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.is_empty() {
            let _ = writeln!(out, "{indent}///");
        } else {
            let _ = writeln!(out, "{indent}/// {line}");
        }
    }
}

impl Method<'_> {
    fn request_type(&self) -> String {
        if self.client_streaming {
            format!("crate::rpc::ServiceStream<{}>", self.input)
        } else {
            self.input.clone()
        }
    }

    fn response_type(&self) -> String {
        if self.server_streaming {
            format!("crate::rpc::ServiceStream<{}>", self.output)
        } else {
            self.output.clone()
        }
    }

    fn signature(&self) -> String {
        format!(
            "async fn {}(&self, ctx: crate::CallContext, request: {}) -> crate::ServiceResult<{}>",
            self.name,
            self.request_type(),
            self.response_type()
        )
    }
}

fn render(spec: &Spec, service: &ServiceDescriptorProto, methods: &[Method], doc: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// Generated by modules/proto/codegen/services.rs from {}. Do not edit.\n",
        spec.proto
    );
    render_trait(&mut out, spec, methods, doc);
    render_client(&mut out, spec, methods);
    render_observed(&mut out, spec, methods);
    render_grpc_client(&mut out, spec, service, methods);
    render_grpc_server(&mut out, spec, service, methods);
    out
}

fn render_trait(out: &mut String, spec: &Spec, methods: &[Method], doc: &str) {
    doc_lines(out, "", doc, &format!("The `{}` service.", spec.proto));
    let _ = writeln!(
        out,
        "///\n/// Generated from `{}`: every call takes the caller's context.",
        spec.proto
    );
    let _ = writeln!(out, "#[async_trait::async_trait]");
    let _ = writeln!(
        out,
        "pub trait {}: Send + Sync + 'static {{",
        spec.trait_name
    );
    for m in methods {
        doc_lines(out, "    ", &m.doc, &format!("`{}`.", m.rpc));
        if m.optional {
            let _ = writeln!(
                out,
                "    {} {{\n        let _ = (ctx, request);\n        Err(crate::ServiceError::unimplemented(\"{} is not supported by mlserve\"))\n    }}",
                m.signature(),
                m.rpc
            );
        } else {
            let _ = writeln!(out, "    {};", m.signature());
        }
    }
    let _ = writeln!(out, "}}\n");
}

fn render_client(out: &mut String, spec: &Spec, methods: &[Method]) {
    let (t, p) = (spec.trait_name, spec.prefix);
    let _ = writeln!(
        out,
        r#"/// A cloneable handle on a [`{t}`]: the implementation itself when the
/// role runs in this process, a [`{p}GrpcClient`] when it does not. Callers
/// cannot tell which.
#[derive(Clone)]
pub struct {p}Client {{
    inner: std::sync::Arc<dyn {t}>,
    remote: bool,
}}

impl {p}Client {{
    /// A client calling `service` in this process.
    pub fn local(service: impl {t}) -> Self {{
        Self::from_arc(std::sync::Arc::new(service))
    }}

    /// A client calling a shared implementation in this process.
    pub fn from_arc(service: std::sync::Arc<dyn {t}>) -> Self {{
        {p}Client {{ inner: service, remote: false }}
    }}

    /// A client calling the service over `channel`.
    pub fn grpc(channel: tonic::transport::Channel, options: &crate::rpc::GrpcOptions) -> Self {{
        {p}Client {{
            inner: std::sync::Arc::new({p}GrpcClient::new(channel, options)),
            remote: true,
        }}
    }}

    /// A client for the service at `uri`, connected on first use.
    pub fn connect_lazy(uri: &str, options: &crate::rpc::GrpcOptions) -> crate::ServiceResult<Self> {{
        Ok(Self::grpc(crate::rpc::lazy_channel(uri, options)?, options))
    }}

    /// Whether calls leave the process.
    pub fn is_remote(&self) -> bool {{
        self.remote
    }}
}}

impl std::fmt::Debug for {p}Client {{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{
        f.debug_struct("{p}Client").field("remote", &self.remote).finish()
    }}
}}

#[async_trait::async_trait]
impl {t} for {p}Client {{"#
    );
    for m in methods {
        let _ = writeln!(
            out,
            "    {} {{\n        self.inner.{}(ctx, request).await\n    }}",
            m.signature(),
            m.name
        );
    }
    let _ = writeln!(out, "}}\n");
}

fn render_observed(out: &mut String, spec: &Spec, methods: &[Method]) {
    let (t, p) = (spec.trait_name, spec.prefix);
    let _ = writeln!(
        out,
        r#"/// A [`{t}`] that tells a [`crate::CallObserver`] of every call of the
/// wrapped implementation: its RPC name, request, time and outcome.
#[derive(Clone)]
pub struct {p}Observed {{
    inner: std::sync::Arc<dyn {t}>,
    observer: std::sync::Arc<dyn crate::CallObserver>,
}}

impl {p}Observed {{
    /// Wraps `inner`; every call is reported to `observer`.
    pub fn new(
        inner: std::sync::Arc<dyn {t}>,
        observer: std::sync::Arc<dyn crate::CallObserver>,
    ) -> Self {{
        {p}Observed {{ inner, observer }}
    }}
}}

#[async_trait::async_trait]
impl {t} for {p}Observed {{"#
    );
    for m in methods {
        let _ = writeln!(
            out,
            "    {} {{
        let watch = crate::observe::Watch::start(&*self.observer, \"{n}\", &request);
        watch.done(self.inner.{n}(ctx, request).await)
    }}",
            m.signature(),
            n = m.name
        );
    }
    let _ = writeln!(out, "}}\n");
}

fn tonic_names(service: &ServiceDescriptorProto) -> (String, String) {
    (
        service.name().to_snake_case(),
        service.name().to_upper_camel_case(),
    )
}

fn render_grpc_client(
    out: &mut String,
    spec: &Spec,
    service: &ServiceDescriptorProto,
    methods: &[Method],
) {
    let (t, p, pb) = (spec.trait_name, spec.prefix, spec.messages);
    let (snake, camel) = tonic_names(service);
    let _ = writeln!(
        out,
        r#"/// [`{t}`] over gRPC: the context goes out as metadata, reply notes and
/// the server's error codes come back, transport failures are typed.
/// Cloning shares the HTTP/2 connection.
#[derive(Clone)]
pub struct {p}GrpcClient {{
    client: {pb}::{snake}_client::{camel}Client<tonic::transport::Channel>,
    token: crate::rpc::TokenMetadata,
}}

impl {p}GrpcClient {{
    /// A client over `channel`.
    pub fn new(channel: tonic::transport::Channel, options: &crate::rpc::GrpcOptions) -> Self {{
        let client = {pb}::{snake}_client::{camel}Client::new(channel)
            .max_decoding_message_size(options.max_message_bytes)
            .max_encoding_message_size(options.max_message_bytes);
        {p}GrpcClient {{ client, token: crate::rpc::TokenMetadata::of(options) }}
    }}
}}

#[async_trait::async_trait]
impl {t} for {p}GrpcClient {{"#
    );
    for m in methods {
        let call = match (m.client_streaming, m.server_streaming) {
            (false, false) => format!(
                "let result = self.client.clone().{n}(self.token.put(ctx.grpc_request(request))).await;\n        crate::rpc::client_reply(&ctx, result)",
                n = m.name
            ),
            (false, true) => format!(
                "let result = self.client.clone().{n}(self.token.put(ctx.grpc_request(request))).await;\n        crate::rpc::client_stream(&ctx, result)",
                n = m.name
            ),
            (true, server_streaming) => format!(
                "let (messages, failure) = crate::rpc::outgoing(request);\n        let mut client = self.client.clone();\n        let call = async {{\n            let result = client.{n}(self.token.put(ctx.grpc_request(messages))).await;\n            crate::rpc::{f}(&ctx, result)\n        }};\n        crate::rpc::with_outgoing(call, failure).await",
                n = m.name,
                f = if server_streaming { "client_stream" } else { "client_reply" }
            ),
        };
        let _ = writeln!(out, "    {} {{\n        {call}\n    }}", m.signature());
    }
    let _ = writeln!(out, "}}\n");
}

fn render_grpc_server(
    out: &mut String,
    spec: &Spec,
    service: &ServiceDescriptorProto,
    methods: &[Method],
) {
    let (t, p, pb) = (spec.trait_name, spec.prefix, spec.messages);
    let (snake, camel) = tonic_names(service);
    let fn_name = format!("{}_grpc_server", p.to_snake_case());
    let _ = writeln!(
        out,
        r#"/// tonic's server for any [`{t}`]: reads each call's context from its
/// metadata (or from an outer layer's request extensions) and writes the
/// answer's reply notes and error code back.
#[derive(Clone)]
pub struct {p}GrpcAdapter {{
    inner: std::sync::Arc<dyn {t}>,
}}

impl {p}GrpcAdapter {{
    /// An adapter over `service`.
    pub fn new(service: std::sync::Arc<dyn {t}>) -> Self {{
        {p}GrpcAdapter {{ inner: service }}
    }}
}}

/// The gRPC server for `service`, with messages up to `max_message_bytes`.
pub fn {fn_name}(
    service: std::sync::Arc<dyn {t}>,
    max_message_bytes: usize,
) -> {pb}::{snake}_server::{camel}Server<{p}GrpcAdapter> {{
    {pb}::{snake}_server::{camel}Server::new({p}GrpcAdapter::new(service))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}}

#[tonic::async_trait]
impl {pb}::{snake}_server::{camel} for {p}GrpcAdapter {{"#
    );
    for m in methods {
        let input = if m.client_streaming {
            format!("tonic::Streaming<{}>", m.input)
        } else {
            m.input.clone()
        };
        let output = if m.server_streaming {
            let stream = format!("{}Stream", m.rpc.to_upper_camel_case());
            let _ = writeln!(
                out,
                "    type {stream} = crate::rpc::GrpcStream<{}>;",
                m.output
            );
            format!("Self::{stream}")
        } else {
            m.output.clone()
        };
        let take = if m.client_streaming {
            "crate::rpc::incoming(request.into_inner())"
        } else {
            "request.into_inner()"
        };
        let reply = if m.server_streaming {
            "server_stream"
        } else {
            "server_reply"
        };
        let _ = writeln!(
            out,
            "    async fn {n}(&self, request: tonic::Request<{input}>) -> Result<tonic::Response<{output}>, tonic::Status> {{\n        let ctx = crate::rpc::server_context(&request);\n        let span = crate::rpc::server_span(\"{proto}\", \"{rpc}\", &ctx);\n        let call = self.inner.{n}(ctx.clone(), {take});\n        let result = tracing::Instrument::instrument(call, span).await;\n        crate::rpc::{reply}(&ctx, result)\n    }}",
            n = m.name,
            proto = spec.proto,
            rpc = m.rpc
        );
    }
    let _ = writeln!(out, "}}");
}
