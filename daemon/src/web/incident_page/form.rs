//! The worker's posted form (`multipart/form-data`, so the camera input works without script):
//! the step, the name typed on a group link, the note, the person chosen for a hand-over, the
//! location the phone gave, and the photo — read up to the size limit and taken only when its
//! bytes are a JPEG, PNG or WebP image, whatever the browser says it is.

use crate::store::Photo;
use crate::web::WebState;
use axum::extract::multipart::{Field, Multipart};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::Form;

/// What the form carried.
#[derive(Debug, Default)]
pub struct Posted {
    pub action: String,
    pub by: String,
    pub note: String,
    /// A roster member id, for a hand-over or a helper.
    pub person: String,
    /// (latitude, longitude, accuracy in metres) when the phone gave its location.
    pub location: Option<(f64, f64, Option<f64>)>,
    pub photo: Option<Photo>,
}

/// Why a form was not taken, in words for the worker.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("照片太大：最大 {limit}，请重新拍一张（页面会自动压缩）或换一张小一些的照片")]
    PhotoTooLarge { limit: String },
    #[error("只能上传 JPEG、PNG 或 WebP 格式的照片")]
    NotAnImage,
    #[error("表单无法读取，请重试：{0}")]
    Unreadable(String),
}

impl FormError {
    pub fn status(&self) -> StatusCode {
        match self {
            FormError::PhotoTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            FormError::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FormError::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// "2 MB", "512 KB".
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.0} MB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}

/// Longest text field taken (a note is cut to 1,000 characters later).
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Reads the form, as `multipart/form-data` (the page's) or URL-encoded (a script's, without a
/// photo); a photo over `photo_max_bytes` or not an image is refused.
pub async fn read(request: Request, state: &WebState, photo_max_bytes: usize) -> Result<Posted, FormError> {
    let multipart = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        let multipart = Multipart::from_request(request, state).await.map_err(|e| FormError::Unreadable(e.body_text()))?;
        return read_multipart(multipart, photo_max_bytes).await;
    }
    let Form(fields) = Form::<Vec<(String, String)>>::from_request(request, state).await.map_err(|e| FormError::Unreadable(e.body_text()))?;
    let mut posted = Posted::default();
    for (name, value) in fields {
        match name.as_str() {
            "action" => posted.action = value,
            "by" => posted.by = value,
            "note" => posted.note = value,
            "person" => posted.person = value,
            _ => {}
        }
    }
    Ok(posted)
}

async fn read_multipart(mut multipart: Multipart, photo_max_bytes: usize) -> Result<Posted, FormError> {
    let too_large = || FormError::PhotoTooLarge { limit: size_label(photo_max_bytes) };
    let mut posted = Posted::default();
    let (mut latitude, mut longitude, mut accuracy) = (None, None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            // Past the route's body limit: the photo was far over the limit.
            Err(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(error) => return Err(FormError::Unreadable(error.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "photo" {
            let bytes = read_limited(field, photo_max_bytes).await?.ok_or_else(too_large)?;
            if !bytes.is_empty() {
                let content_type = image_type(&bytes).ok_or(FormError::NotAnImage)?;
                posted.photo = Some(Photo { content_type: content_type.to_string(), bytes });
            }
            continue;
        }
        let text = read_limited(field, MAX_TEXT_BYTES).await?.ok_or_else(|| FormError::Unreadable(format!("{name} too long")))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let number = || text.trim().parse::<f64>().ok().filter(|v| v.is_finite());
        match name.as_str() {
            "action" => posted.action = text,
            "by" => posted.by = text,
            "note" => posted.note = text,
            "person" => posted.person = text,
            "lat" => latitude = number().filter(|v| v.abs() <= 90.0),
            "lon" => longitude = number().filter(|v| v.abs() <= 180.0),
            "acc" => accuracy = number().filter(|v| *v >= 0.0),
            _ => {}
        }
    }
    posted.location = latitude.zip(longitude).map(|(lat, lon)| (lat, lon, accuracy));
    Ok(posted)
}

/// A field's bytes, or `None` once it passes `limit` (the rest is not read).
async fn read_limited(mut field: Field<'_>, limit: usize) -> Result<Option<Vec<u8>>, FormError> {
    let mut bytes = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Ok(None);
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Some(bytes)),
            Err(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => return Ok(None),
            Err(error) => return Err(FormError::Unreadable(error.body_text())),
        }
    }
}

/// The image type of `bytes` by their first bytes: what the photo is served as.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some("image/png"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_known_by_their_bytes_not_their_name() {
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Some("image/jpeg"));
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n\0\0"), Some("image/png"));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_type(b"<svg onload=alert(1)>"), None);
        assert_eq!(image_type(b""), None);
    }

    #[test]
    fn limits_read_as_people_say_them() {
        assert_eq!(size_label(2 * 1024 * 1024), "2 MB");
        assert_eq!(size_label(300 * 1024), "300 KB");
    }
}
