//! The JSON documents the services exchange, with the field names of Istio's services (the
//! page and tests written for Istio's Bookinfo read the same keys).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `details`' answer to `GET /details/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookDetails {
    pub id: i64,
    pub author: String,
    pub year: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub pages: u32,
    pub publisher: String,
    pub language: String,
    #[serde(rename = "ISBN-10")]
    pub isbn_10: String,
    #[serde(rename = "ISBN-13")]
    pub isbn_13: String,
}

/// `ratings`' answer to `GET /ratings/<id>`: stars per reviewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRatings {
    pub id: i64,
    pub ratings: BTreeMap<String, u32>,
}

/// `reviews`' answer to `GET /reviews/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookReviews {
    /// The product id, as text (as Istio's reviews sends it).
    pub id: String,
    /// Which instance answered: `reviews-v1`, `reviews-v2`, `reviews-v3` (a pod name in
    /// Kubernetes). The page shows it under each review.
    pub podname: String,
    /// The cluster, when there is one to name (Istio's `CLUSTER_NAME`).
    #[serde(default)]
    pub clustername: Option<String>,
    pub reviews: Vec<Review>,
}

/// One review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub text: String,
    /// Absent in reviews v1, which does not call ratings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
}

/// The stars of a review (and their colour), or why there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rating {
    Stars { stars: u32, color: String },
    Error { error: String },
}

/// A product of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: i64,
    pub title: String,
    /// Trusted HTML (the store's own text), shown as is.
    pub description_html: String,
}

/// `{"error": "..."}`, the services' error document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ErrorBody {
    pub fn new(message: &str) -> Self {
        ErrorBody {
            error: message.to_owned(),
        }
    }
}

/// The store's catalogue: one book, as in Istio's productpage.
pub fn products() -> Vec<Product> {
    vec![Product {
        id: 0,
        title: "The Comedy of Errors".into(),
        description_html: "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">\
            Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> \
            early plays. It is his shortest and one of his most farcical comedies, with a major \
            part of the humour coming from slapstick and mistaken identity, in addition to puns \
            and word play."
            .into(),
    }]
}
