//! `[[models]]`: ids, providers, prices, sampling and harnesses.

use std::collections::{BTreeMap, HashMap};

use super::ctx::{Loader, root};
use crate::base::diag::did_you_mean;
use crate::config::check::{kind_of, section};
use crate::config::fields::fields_of;
use crate::config::raw::RawModel;
use crate::config::{ModelConfig, ProviderConfig};
use crate::source::KeyPath;
use crate::vocab::{Price, Sampling};

impl Loader<'_> {
    pub(super) fn models(
        &mut self,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Vec<ModelConfig> {
        let at = root().key("models");
        let mut out: Vec<ModelConfig> = Vec::new();
        let Some(value) = self.doc.get(&at) else {
            self.err(&root(), "the pipeline has no models").help =
                Some("add at least one [[models]] entry".into());
            return out;
        };
        let Some(items) = value.as_array() else {
            let msg = format!(
                "`models` must be an array of tables ([[models]]), found {}",
                kind_of(value)
            );
            self.err(&at, msg);
            return out;
        };
        // Each id's first position, for duplicates.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..items.len() {
            let p = at.index(i);
            self.unknown_price_keys(&p.key("price"));
            let Some(raw) = section::<RawModel>(self.doc, &p, "a model", &mut self.diags) else {
                continue;
            };
            let id = self.safe_name(
                &p.key("id"),
                "model id",
                &raw.id,
                false,
                "the id names the model's node directories and recordings; the endpoint's name goes in `model`",
            );
            if let Some(&first) = seen.get(&raw.id) {
                self.err(&p.key("id"), format!("duplicate model id `{}`", raw.id))
                    .help = Some(format!(
                    "model ids must be unique within a round; `models[{first}]` already uses `{}`",
                    raw.id
                ));
            } else {
                seen.insert(raw.id.clone(), out.len());
            }
            if !providers.contains_key(&raw.provider)
                && self
                    .doc
                    .get(&root().key("providers").key(&raw.provider))
                    .is_none()
            {
                let help = did_you_mean(&raw.provider, providers.keys().map(String::as_str));
                self.err(
                    &p.key("provider"),
                    format!(
                        "model `{}` uses unknown provider `{}`",
                        raw.id, raw.provider
                    ),
                )
                .help = help.or_else(|| Some("define it under [providers.NAME]".into()));
            }
            let price = raw.price.unwrap_or_default();
            for (field, v) in [
                ("input", Some(price.input)),
                ("output", Some(price.output)),
                ("cache_read", price.cache_read),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    self.err(
                        &p.key("price").key(field),
                        format!("price.{field} is negative ({v})"),
                    )
                    .help = Some("prices are USD per million tokens, zero or more".into());
                }
            }
            if let Some(t) = raw.temperature
                && !(0.0..=2.0).contains(&t)
            {
                self.err(
                    &p.key("temperature"),
                    format!("temperature {t} is outside the range 0 to 2"),
                );
            }
            let harness = raw
                .harness
                .as_deref()
                .and_then(|h| self.harness(&p.key("harness"), h));
            let Some(id) = id else { continue };
            out.push(ModelConfig {
                id,
                provider: raw.provider,
                model: raw.model,
                price,
                sampling: Sampling {
                    temperature: raw.temperature,
                    seed: raw.seed,
                    max_tokens: raw.max_tokens,
                },
                harness,
                max_cost_usd: self.cost_cap(&p.key("max_cost_usd"), raw.max_cost_usd),
            });
        }
        if items.is_empty() {
            self.err(&at, "the pipeline has no models");
        }
        out
    }

    /// `Price` ignores keys it does not know; a misspelt `inptu` would silently price at zero.
    pub(super) fn unknown_price_keys(&mut self, at: &KeyPath) {
        let Some(serde_json::Value::Object(price)) = self.doc.get(at) else {
            return;
        };
        let known = fields_of::<Price>();
        for key in price.keys().filter(|k| !known.contains(&k.as_str())) {
            let d = self
                .doc
                .error_at(
                    &at.key(key),
                    format!("unknown key `{key}` in a price"),
                    true,
                )
                .help_opt(did_you_mean(key, known.iter().copied()));
            self.diags.push(d);
        }
    }
}
