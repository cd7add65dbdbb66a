// The worker's page, made lighter to use on a phone: a chosen photo is scaled down (longest side
// 1600 px, JPEG) before it is sent; when 到场 is possible the phone is asked for its location,
// shown with the distance to the house (never required); the name typed on a group link is
// remembered on the phone for the next step; a pressed button cannot be pressed twice.
// Without script the form still works: the photo goes as taken, without a location.
(function () {
  var form = document.getElementById('act');
  if (!form) return;
  var input = form.querySelector('input[type=file]');
  var photoStatus = document.getElementById('photo-status');
  var preview = document.getElementById('preview');
  if (input && window.DataTransfer && HTMLCanvasElement.prototype.toBlob) {
    input.addEventListener('change', function () {
      var file = input.files[0];
      if (!file || file.type === 'image/jpeg' && file.size < 300000) { show(file); return; }
      photoStatus.textContent = '正在压缩照片…';
      var url = URL.createObjectURL(file);
      var img = new Image();
      img.onload = function () {
        var scale = Math.min(1, 1600 / Math.max(img.naturalWidth, img.naturalHeight));
        var canvas = document.createElement('canvas');
        canvas.width = Math.round(img.naturalWidth * scale);
        canvas.height = Math.round(img.naturalHeight * scale);
        canvas.getContext('2d').drawImage(img, 0, 0, canvas.width, canvas.height);
        URL.revokeObjectURL(url);
        canvas.toBlob(function (blob) {
          if (!blob) { photoStatus.textContent = '照片无法压缩，将按原样上传'; return; }
          var scaled = new DataTransfer();
          scaled.items.add(new File([blob], 'photo.jpg', { type: 'image/jpeg' }));
          input.files = scaled.files;
          show(input.files[0]);
        }, 'image/jpeg', 0.8);
      };
      img.onerror = function () { photoStatus.textContent = '无法读取这张照片，请换一张'; };
      img.src = url;
    });
  }
  function show(file) {
    if (!file) { photoStatus.textContent = ''; preview.hidden = true; return; }
    photoStatus.textContent = '照片已准备好（' + Math.max(1, Math.round(file.size / 1024)) + ' KB）';
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }
  var whereStatus = document.getElementById('where-status');
  if (form.elements.lat && navigator.geolocation) {
    whereStatus.textContent = '正在获取位置…';
    navigator.geolocation.getCurrentPosition(function (position) {
      var c = position.coords;
      form.elements.lat.value = c.latitude;
      form.elements.lon.value = c.longitude;
      form.elements.acc.value = Math.round(c.accuracy);
      var text = '已获取位置（误差约 ' + Math.round(c.accuracy) + ' 米）';
      var house = (form.dataset.house || '').split(',').map(Number);
      if (house.length === 2) text += '，距房屋约 ' + distance(c.latitude, c.longitude, house[0], house[1]) + ' 米';
      whereStatus.textContent = text;
    }, function () {
      whereStatus.textContent = '未获取位置（不影响到场登记）';
    }, { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  }
  function distance(lat1, lon1, lat2, lon2) {
    var r = Math.PI / 180, a = Math.pow(Math.sin((lat2 - lat1) * r / 2), 2) +
      Math.cos(lat1 * r) * Math.cos(lat2 * r) * Math.pow(Math.sin((lon2 - lon1) * r / 2), 2);
    return Math.round(2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(a))));
  }
  var by = form.elements.by;
  try { if (by && !by.value) by.value = localStorage.getItem('gridwatch-by') || ''; } catch (e) {}
  form.addEventListener('submit', function () {
    try { if (by && by.value) localStorage.setItem('gridwatch-by', by.value); } catch (e) {}
    setTimeout(function () {
      form.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    }, 0);
  });
})();
