//! The HTML of the product page and the index page.
//!
//! The markup keeps what scripts and tests written for Istio's Bookinfo look for: the title
//! "Simple Bookstore App", each filled star a `glyphicon glyphicon-star` span inside a
//! `<font color="black">` (v2) or `<font color="red">` (v3) element, "Reviews served by:
//! reviews-vN", and Istio's error messages. Everything that comes from another service or from
//! the user is escaped.

use std::fmt::Write;

use crate::services::model::{BookDetails, BookReviews, Product, Rating};

/// Where the stylesheet is served (the gateway routes `/static` to productpage).
pub(crate) const STYLESHEET_PATH: &str = "/static/bookinfo.css";
pub(crate) const STYLESHEET: &str = include_str!("bookinfo.css");

/// What the page shows: the details or reviews, or the message that replaces them.
pub(crate) struct Page<'a> {
    pub product: &'a Product,
    pub details: Result<&'a BookDetails, &'a str>,
    pub reviews: Result<&'a BookReviews, &'a str>,
    pub user: Option<&'a str>,
}

pub(crate) fn render(p: &Page<'_>) -> String {
    let mut html = String::with_capacity(8 * 1024);
    head(&mut html);
    nav(&mut html, p.user);
    let _ = write!(
        html,
        "<main class=\"container\">\n<section class=\"book\">\n<h1>{title}</h1>\n\
         <p class=\"description\">{description}</p>\n</section>\n",
        title = escape(&p.product.title),
        // The store's own trusted HTML, as Istio's template shows it unescaped.
        description = p.product.description_html,
    );
    details(&mut html, p.details);
    reviews(&mut html, p.reviews);
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

fn head(html: &mut String) {
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n\
         <title>Simple Bookstore App</title>\n\
         <link rel=\"stylesheet\" href=\"{STYLESHEET_PATH}\">\n</head>\n<body>\n"
    );
}

/// The bar with the sign-in form, or the signed-in user and "Sign out".
fn nav(html: &mut String, user: Option<&str>) {
    html.push_str("<nav class=\"navbar\">\n<span class=\"brand\">BookInfo Sample</span>\n");
    match user {
        Some(user) => {
            let _ = writeln!(
                html,
                "<span class=\"user\">Signed in as <b id=\"user\">{}</b> \
                 <a href=\"logout\">Sign out</a></span>",
                escape(user)
            );
        }
        None => html.push_str(
            "<form class=\"sign-in\" method=\"post\" action=\"login\" name=\"login_form\">\n\
             <label>Username <input id=\"username\" name=\"username\" required></label>\n\
             <label>Password <input id=\"password\" name=\"passwd\" type=\"password\"></label>\n\
             <button type=\"submit\">Sign in</button>\n</form>\n",
        ),
    }
    html.push_str("</nav>\n");
}

fn details(html: &mut String, details: Result<&BookDetails, &str>) {
    html.push_str("<section class=\"details\" id=\"details\">\n");
    match details {
        Ok(d) => {
            let _ = write!(
                html,
                "<h4>Book Details</h4>\n<table>\n<thead><tr><th>ISBN-10</th><th>Publisher</th>\
                 <th>Pages</th><th>Type</th><th>Language</th></tr></thead>\n\
                 <tbody><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></tbody>\n\
                 </table>\n",
                escape(&d.isbn_10),
                escape(&d.publisher),
                d.pages,
                escape(&d.kind),
                escape(&d.language),
            );
        }
        Err(message) => {
            let _ = write!(
                html,
                "<p class=\"error\">Error fetching product details</p>\n<p>{}</p>\n",
                escape(message)
            );
        }
    }
    html.push_str("</section>\n");
}

fn reviews(html: &mut String, reviews: Result<&BookReviews, &str>) {
    html.push_str("<section class=\"reviews\" id=\"reviews\">\n");
    match reviews {
        Ok(r) => {
            html.push_str("<h4>Book Reviews</h4>\n");
            let served_by = match &r.clustername {
                Some(cluster) => format!("{} on cluster {}", escape(&r.podname), escape(cluster)),
                None => escape(&r.podname),
            };
            for review in &r.reviews {
                html.push_str("<div class=\"review\">\n");
                match &review.rating {
                    Some(Rating::Stars { stars, color }) => stars_html(html, *stars, color),
                    Some(Rating::Error { error }) => {
                        let _ = writeln!(html, "<p class=\"error\">{}</p>", escape(error));
                    }
                    None => {}
                }
                let _ = write!(
                    html,
                    "<blockquote><p>{text}</p></blockquote>\n<small class=\"reviewer\">{who}\
                     </small>\n<small class=\"served-by\">Reviews served by: {served_by}</small>\n\
                     </div>\n",
                    text = escape(&review.text),
                    who = escape(&review.reviewer),
                );
            }
        }
        Err(message) => {
            let _ = write!(
                html,
                "<p class=\"error\">Error fetching product reviews</p>\n<p>{}</p>\n",
                escape(message)
            );
        }
    }
    html.push_str("</section>\n");
}

/// Five stars, `stars` of them filled, in `color`: the markup of Istio's original template.
fn stars_html(html: &mut String, stars: u32, color: &str) {
    let filled = stars.min(5);
    let _ = write!(html, "<font color=\"{}\">", escape(color));
    for _ in 0..filled {
        html.push_str("<span class=\"glyphicon glyphicon-star\">&#9733;</span>");
    }
    for _ in filled..5 {
        html.push_str("<span class=\"glyphicon glyphicon-star-empty\">&#9734;</span>");
    }
    html.push_str("</font>\n");
}

/// The index page: what Bookinfo is made of, and where to look.
pub(crate) fn index() -> String {
    let mut html = String::new();
    head(&mut html);
    html.push_str(
        "<main class=\"container\">\n<h1>Bookinfo</h1>\n\
         <p>Istio's Bookinfo sample, in Rust, on the mesh.</p>\n\
         <table>\n<thead><tr><th>service</th><th>address</th><th>calls</th></tr></thead>\n<tbody>\n\
         <tr><td>productpage</td><td>http://productpage:9080</td><td>details, reviews</td></tr>\n\
         <tr><td>details</td><td>http://details:9080</td><td></td></tr>\n\
         <tr><td>reviews</td><td>http://reviews:9080</td><td>ratings (v2, v3)</td></tr>\n\
         <tr><td>ratings</td><td>http://ratings:9080</td><td></td></tr>\n\
         </tbody>\n</table>\n\
         <p><a href=\"productpage\">Normal user</a> | \
         <a href=\"productpage?u=test\">Test user</a></p>\n</main>\n</body>\n</html>\n",
    );
    html
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
