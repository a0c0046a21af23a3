/* A batch loop over OpenSSL's SHA-256 for identifier tokens: HMAC-SHA256 (RFC 2104) of many
 * messages under one key, each truncated, written into one buffer, with the GIL released.
 *
 * Nothing here is a primitive of its own: the compression function is OpenSSL's (SHA-NI where the
 * CPU has it). HMAC's construction is H((K ^ opad) || H((K ^ ipad) || m)); the caller passes the
 * two 64-byte padded key blocks, and their SHA-256 states are computed once per call and copied
 * per message (a struct copy), which is where the batch saves: Python's hmac copies an OpenSSL
 * object per value. The results are checked against the standard library's hmac in the tests.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/sha.h>

static const char HEX_DIGITS[] = "0123456789abcdef";

static PyObject *hmac_sha256_batch(PyObject *self, PyObject *args) {
    Py_buffer ipad, opad, data, offsets;
    Py_ssize_t length;
    int hex = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*y*n|p", &ipad, &opad, &data, &offsets, &length, &hex))
        return NULL;
    PyObject *result = NULL;
    if (ipad.len != SHA256_CBLOCK || opad.len != SHA256_CBLOCK) {
        PyErr_SetString(PyExc_ValueError, "the padded key blocks must be 64 bytes each");
        goto done;
    }
    if (length < 1 || length > SHA256_DIGEST_LENGTH) {
        PyErr_SetString(PyExc_ValueError, "length must be between 1 and 32");
        goto done;
    }
    if (offsets.len % (Py_ssize_t)sizeof(int64_t) != 0 || offsets.len < (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "offsets must be n + 1 int64 values");
        goto done;
    }
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    const int64_t *bounds = (const int64_t *)offsets.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (bounds[i] < 0 || bounds[i] > bounds[i + 1] || bounds[i + 1] > data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets must rise within the data");
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, n * length * (hex ? 2 : 1));
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *bytes = (const unsigned char *)data.buf;
    SHA256_CTX inner, outer, ctx;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    Py_BEGIN_ALLOW_THREADS
    SHA256_Init(&inner);
    SHA256_Update(&inner, ipad.buf, SHA256_CBLOCK);
    SHA256_Init(&outer);
    SHA256_Update(&outer, opad.buf, SHA256_CBLOCK);
    for (Py_ssize_t i = 0; i < n; i++) {
        ctx = inner;
        SHA256_Update(&ctx, bytes + bounds[i], (size_t)(bounds[i + 1] - bounds[i]));
        SHA256_Final(digest, &ctx);
        ctx = outer;
        SHA256_Update(&ctx, digest, SHA256_DIGEST_LENGTH);
        SHA256_Final(digest, &ctx);
        if (hex) {
            unsigned char *to = out + 2 * i * length;
            for (Py_ssize_t j = 0; j < length; j++) {
                to[2 * j] = HEX_DIGITS[digest[j] >> 4];
                to[2 * j + 1] = HEX_DIGITS[digest[j] & 15];
            }
        } else {
            memcpy(out + i * length, digest, (size_t)length);
        }
    }
    OPENSSL_cleanse(&inner, sizeof inner);
    OPENSSL_cleanse(&outer, sizeof outer);
    OPENSSL_cleanse(&ctx, sizeof ctx);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&ipad);
    PyBuffer_Release(&opad);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"hmac_sha256_batch", hmac_sha256_batch, METH_VARARGS,
     "hmac_sha256_batch(ipad_block, opad_block, data, offsets, length, hex=False) -> bytes\n\n"
     "HMAC-SHA256 of data[offsets[i]:offsets[i+1]] for every i, each truncated to length bytes\n"
     "(with hex, as 2 * length lowercase hexadecimal characters)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hmacbatch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hmacbatch(void) { return PyModule_Create(&module); }
