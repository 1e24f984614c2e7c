;;; e2e.el --- drives Emacs + lsp-mode for tests/test_emacs_e2e.py  -*- lexical-binding: t -*-

;; Runs in `emacs --batch' inside the editors root. The environment variable VLLM_GHOST_EMACS_E2E
;; holds a JSON object: init (the configuration to load), folder, file, line, typed, report,
;; startTimeoutS, and cycleLine / cycleColumn (where the user asks for alternatives).
;; Each step appends one JSON line to the report file; tests/test_emacs_e2e.py asserts on them.
;; Batch Emacs never goes idle, so the idle timers lsp-mode relies on (lsp-deferred, the
;; inline-completion idle delay) run when this script pauses: that is the user pausing.

(require 'json)
(require 'package)

(defvar e2e-config (json-parse-string (getenv "VLLM_GHOST_EMACS_E2E") :object-type 'plist))

(defun e2e-report (step &rest fields)
  "Append STEP with FIELDS (a plist) to the report file."
  (let ((line (json-serialize (append (list :step step :time (float-time)) fields))))
    (with-temp-buffer
      (insert line "\n")
      (write-region (point-min) (point-max) (plist-get e2e-config :report) t 'silent))))

(defun e2e-run-idle-timers ()
  (dolist (timer (copy-sequence timer-idle-list))
    (when (memq timer timer-idle-list)
      (timer-event-handler timer))))

(defun e2e-wait (what timeout-s predicate)
  "Pause (process output, timers, idle timers) until PREDICATE returns non-nil; return it."
  (let ((deadline (+ (float-time) timeout-s))
        value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.1)
      (e2e-run-idle-timers))
    (unless value
      (error "Timed out after %s s waiting for %s" timeout-s what))
    value))

(defun e2e-command (command timeout-s)
  "Run COMMAND through lsp-mode's workspace/executeCommand; the result as a hash table."
  (let ((lsp-response-timeout timeout-s))
    (lsp-workspace-command-execute command)))

(defun e2e-buffer-text ()
  (buffer-substring-no-properties (point-min) (point-max)))

(defun e2e-main ()
  (package-initialize) ; Debian's elpa-lsp-mode is a package.el package
  (load (plist-get e2e-config :init) nil t)
  ;; lsp-mode asks for a project root otherwise.
  (lsp-workspace-folders-add (plist-get e2e-config :folder))
  (find-file (plist-get e2e-config :file))
  (e2e-report "opened" :mode (symbol-name major-mode))
  (let ((workspace (e2e-wait "lsp-mode to start vllm-ghost" 60
                             (lambda () (lsp-find-workspace 'vllm-ghost nil)))))
    (e2e-wait "initialized" 60 (lambda () (eq (lsp--workspace-status workspace) 'initialized))))
  (e2e-report "attached" :inlineCompletionMode (if lsp-inline-completion-mode t :false))
  (let (status)
    (condition-case err
        (e2e-wait "vllmGhost.status to say ready" (plist-get e2e-config :startTimeoutS)
                  (lambda ()
                    (setq status (e2e-command "vllmGhost.status" 10))
                    (when (equal (gethash "state" status) "error")
                      (error "The server reports an error"))
                    (equal (gethash "state" status) "ready")))
      (error (error "%s; last status: %s" (error-message-string err) (json-serialize status)))))
  (e2e-report "ready")
  (goto-char (point-min))
  (forward-line (1- (plist-get e2e-config :line)))
  (end-of-line)
  (execute-kbd-macro (plist-get e2e-config :typed))
  (e2e-report "typed")
  (let ((overlay (e2e-wait "the ghost text overlay" 60
                           (lambda () (and (overlayp lsp-inline-completion--overlay) lsp-inline-completion--overlay)))))
    (e2e-report "ghost"
                :start (overlay-start overlay) :end (overlay-end overlay) :point (point)
                :display (substring-no-properties (or (overlay-get overlay 'display) ""))
                :afterString (substring-no-properties (or (overlay-get overlay 'after-string) ""))
                :text (e2e-buffer-text)))
  (execute-kbd-macro (kbd "C-<return>"))
  (e2e-report "accepted" :text (e2e-buffer-text) :point (point)
              :overlay (if (overlayp lsp-inline-completion--overlay) t :false))
  (let ((status (e2e-command "vllmGhost.status" 10)))
    (e2e-report "status" :result status))
  (let* ((started (float-time))
         (restarted (vllm-ghost-restart-model))) ; the configuration's command
    (e2e-report "restarted" :result restarted :seconds (- (float-time) started)))
  (e2e-report "statusAfterRestart" :result (e2e-command "vllmGhost.status" 10))
  (e2e-cycle))

(defun e2e-seen ()
  "The buffer as the user sees it: the ghost text overlay's display and after-string in place."
  (let ((overlay lsp-inline-completion--overlay))
    (if (not (overlayp overlay))
        (e2e-buffer-text)
      (concat (buffer-substring-no-properties (point-min) (overlay-start overlay))
              (substring-no-properties (or (overlay-get overlay 'display) ""))
              (substring-no-properties (or (overlay-get overlay 'after-string) ""))
              (buffer-substring-no-properties (overlay-end overlay) (point-max))))))

(defun e2e-cycle-report (step)
  (e2e-report step :seen (e2e-seen) :current (or lsp-inline-completion--current :null)
              :point (point) :overlay (if (overlayp lsp-inline-completion--overlay) t :false)))

(defun e2e-ask ()
  "M-x lsp-inline-completion-display: an explicit (Invoked) request, its answer as ghost text."
  ;; It samples several answers: slower than a keystroke's request on a loaded machine.
  (let ((lsp-response-timeout 120))
    (execute-kbd-macro (kbd "M-x lsp-inline-completion-display RET"))))

(defun e2e-cycle ()
  "The user asks for completions (M-x lsp-inline-completion-display: an Invoked request),
goes through them with C-n and C-p (lsp-mode's next/previous), and accepts the one shown."
  (goto-char (point-min))
  (forward-line (1- (plist-get e2e-config :cycleLine)))
  (move-to-column (plist-get e2e-config :cycleColumn))
  (e2e-report "cycleAt" :point (point) :text (e2e-buffer-text))
  (let ((asks 1))
    (e2e-ask)
    ;; The tiny model is sure of nearly everything: now and then all its samples are one answer
    ;; (one item, nothing to cycle). The user dismisses it and asks again.
    (while (and (< (length lsp-inline-completion--items) 2) (< asks 3))
      (execute-kbd-macro (kbd "<escape>"))
      (setq asks (1+ asks))
      (e2e-ask))
    (e2e-report "cycleItems" :asks asks
                :items (vconcat (mapcar (lambda (item) (lsp:inline-completion-item-insert-text item))
                                        lsp-inline-completion--items))))
  (e2e-cycle-report "cycleShown")
  (execute-kbd-macro (kbd "C-n"))
  (e2e-cycle-report "cycleNext")
  (execute-kbd-macro (kbd "C-n"))
  (e2e-cycle-report "cycleNextAgain")
  (execute-kbd-macro (kbd "C-p"))
  (e2e-cycle-report "cyclePrev")
  (execute-kbd-macro (kbd "C-<return>"))
  (e2e-cycle-report "cycleAccepted")
  (e2e-report "cycleStatus" :result (e2e-command "vllmGhost.status" 10)))

(defun e2e-server-stderr ()
  "What our server wrote to stderr (lsp-mode keeps it in a buffer)."
  (let ((buffer (seq-find (lambda (b) (string-prefix-p "*vllm-ghost::stderr" (buffer-name b))) (buffer-list))))
    (if buffer (with-current-buffer buffer (e2e-buffer-text)) "")))

(condition-case err
    (e2e-main)
  (error (e2e-report "error" :message (error-message-string err) :serverStderr (e2e-server-stderr))))
;; Always: what the server said (with log.level debug, one line of stage timings per completion).
(e2e-report "serverStderr" :text (e2e-server-stderr))
(e2e-report "exiting")
(kill-emacs 0)
