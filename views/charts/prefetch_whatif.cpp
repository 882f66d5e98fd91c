#include "charts/prefetch_whatif.h"

#include "atlas_document.h"
#include "charts/chart_parts.h"
#include "sim/hardware.h"

#include <QBarCategoryAxis>
#include <QBarSeries>
#include <QBarSet>
#include <QChart>
#include <QChartView>
#include <QComboBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QSlider>
#include <QSpinBox>
#include <QStackedBarSeries>
#include <QTimer>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>

namespace moeatlas::views {

namespace {

constexpr double kBandwidthStep = 0.5e9; // the bandwidth slider's unit: 0.5 GB/s
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

void attach(QChart* chart, QAbstractSeries* series, const QStringList& categories, const QString& yTitle, double top)
{
    chart->addSeries(series);
    auto* x = new QBarCategoryAxis;
    x->append(categories);
    auto* y = new QValueAxis;
    y->setTitleText(yTitle);
    y->setRange(0, top > 0 ? top * 1.1 : 1);
    chart->addAxis(x, Qt::AlignBottom);
    chart->addAxis(y, Qt::AlignLeft);
    series->attachAxis(x);
    series->attachAxis(y);
}

} // namespace

std::pair<double, QString> timeUnit(double largest)
{
    if (largest >= 1e-3)
        return { 1e3, QStringLiteral("ms") };
    return { 1e6, QStringLiteral("µs") };
}

PrefetchWhatIf::PrefetchWhatIf(QWidget* parent)
    : QWidget(parent)
    , m_runner(new WhatIfRunner(this))
    , m_debounce(new QTimer(this))
    , m_preset(new QComboBox(this))
    , m_cacheMode(new QComboBox(this))
    , m_cache(new QSlider(Qt::Horizontal, this))
    , m_cacheLabel(new QLabel(this))
    , m_bandwidth(new QSlider(Qt::Horizontal, this))
    , m_bandwidthLabel(new QLabel(this))
    , m_policy(new QComboBox(this))
    , m_eviction(new QComboBox(this))
    , m_predictor(new QComboBox(this))
    , m_lookahead(new QSpinBox(this))
    , m_budget(new QSpinBox(this))
    , m_sequences(new QSpinBox(this))
    , m_scope(new QLabel(this))
    , m_tpot(new QLabel(this))
    , m_tpotChart(new QChart)
    , m_stallChart(new QChart)
{
    m_debounce->setSingleShot(true);
    m_debounce->setInterval(150);
    for (const std::string& name : hardwarePresetNames())
        m_preset->addItem(qs(name));
    m_preset->setToolTip(tr("Built-in hardware preset (resources/sim/*.json): GPU compute and memory bandwidth for "
                            "the roofline, host-to-device link"));
    m_cacheMode->addItem(tr("slots per layer"));
    m_cacheMode->addItem(tr("GiB (global)"));
    m_cacheMode->setToolTip(tr("The GPU expert cache: a number of experts in every MoE layer, or a byte budget "
                               "shared by all layers' experts (the slider is its share of all routed experts)"));
    m_bandwidth->setRange(1, 256);
    m_bandwidth->setToolTip(tr("Host-to-device link bandwidth (one copy stream), 0.5 to 128 GB/s"));
    for (const SimPolicy p : { SimPolicy::OnDemand, SimPolicy::Prefetch, SimPolicy::Speculative })
        m_policy->addItem(qs(simPolicyName(p)), static_cast<int>(p));
    m_policy->setCurrentIndex(1);
    m_policy->setToolTip(tr("on-demand: a layer's missing experts are fetched at its router; prefetch: the "
                            "predictor's guesses are fetched d layers early; speculative: layers run the predicted "
                            "experts, nothing is fetched late (quality cost: the table below)"));
    for (const Eviction e : { Eviction::Lru, Eviction::Lfu, Eviction::Belady })
        m_eviction->addItem(qs(evictionName(e)), static_cast<int>(e));
    m_lookahead->setRange(1, 1);
    m_lookahead->setToolTip(tr("Lookahead d: predictions made d MoE layers ahead"));
    m_budget->setToolTip(tr("Experts prefetched per token (k to E)"));
    m_sequences->setRange(1, 1);
    m_sequences->setValue(8);
    m_sequences->setToolTip(tr("Sequences of each domain simulated here (first ones, in atlas order); moeatlas "
                               "simulate runs every recorded sequence"));
    m_scope->setWordWrap(true);
    m_tpot->setWordWrap(true);
    m_tpot->setTextInteractionFlags(Qt::TextSelectableByMouse);

    auto* form = new QFormLayout;
    form->addRow(tr("Hardware"), m_preset);
    auto* cacheRow = new QHBoxLayout;
    cacheRow->addWidget(m_cacheMode);
    cacheRow->addWidget(m_cache, 1);
    cacheRow->addWidget(m_cacheLabel);
    form->addRow(tr("Cache"), cacheRow);
    auto* linkRow = new QHBoxLayout;
    linkRow->addWidget(m_bandwidth, 1);
    linkRow->addWidget(m_bandwidthLabel);
    form->addRow(tr("Link"), linkRow);
    auto* policyRow = new QHBoxLayout;
    policyRow->addWidget(m_policy);
    policyRow->addWidget(new QLabel(tr("eviction"), this));
    policyRow->addWidget(m_eviction);
    policyRow->addStretch(1);
    form->addRow(tr("Policy"), policyRow);
    auto* predictRow = new QHBoxLayout;
    predictRow->addWidget(m_predictor);
    predictRow->addWidget(new QLabel(tr("lookahead"), this));
    predictRow->addWidget(m_lookahead);
    predictRow->addWidget(new QLabel(tr("budget"), this));
    predictRow->addWidget(m_budget);
    predictRow->addStretch(1);
    form->addRow(tr("Predictor"), predictRow);
    form->addRow(tr("Sequences"), m_sequences);

    auto* charts = new QHBoxLayout;
    charts->addWidget(makeChartView(m_tpotChart, this, 220), 2);
    charts->addWidget(makeChartView(m_stallChart, this, 220), 3);
    for (QChart* chart : { m_tpotChart, m_stallChart })
        chart->setMargins(QMargins(2, 2, 2, 2));
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(form);
    layout->addWidget(m_scope);
    layout->addWidget(m_tpot);
    layout->addLayout(charts, 1);

    connect(m_debounce, &QTimer::timeout, this, &PrefetchWhatIf::run);
    connect(m_preset, &QComboBox::currentIndexChanged, this, &PrefetchWhatIf::presetChanged);
    connect(m_cacheMode, &QComboBox::currentIndexChanged, this, &PrefetchWhatIf::cacheModeChanged);
    for (QSlider* s : { m_cache, m_bandwidth })
        connect(s, &QSlider::valueChanged, this, [this] {
            updateLabels();
            schedule();
        });
    for (QComboBox* b : { m_policy, m_eviction, m_predictor })
        connect(b, &QComboBox::currentIndexChanged, this, &PrefetchWhatIf::schedule);
    for (QSpinBox* b : { m_lookahead, m_budget, m_sequences })
        connect(b, &QSpinBox::valueChanged, this, &PrefetchWhatIf::schedule);
    connect(m_runner, &WhatIfRunner::simulated, this, [this] {
        m_error.clear();
        show(*m_runner->outcome());
    });
    connect(m_runner, &WhatIfRunner::failed, this, [this](quint64, const QString& message) {
        m_error = message;
        m_tpot->setText(tr("Cannot simulate: %1").arg(message));
    });
    connect(m_runner, &WhatIfRunner::busyChanged, this, [this](bool busy) {
        if (busy)
            m_scope->setText(m_scope->text().section(QLatin1Char('\n'), 0, 0) + tr("\nSimulating…"));
    });
    setSnapshot(nullptr);
}

void PrefetchWhatIf::setDebounceInterval(int ms)
{
    m_debounce->setInterval(ms);
}

void PrefetchWhatIf::setSnapshot(const std::shared_ptr<const AtlasSnapshot>& snapshot)
{
    const QString previous = m_snapshot ? m_snapshot->path : QString();
    m_snapshot = snapshot;
    m_shown.reset();
    m_error.clear();
    m_runner->setAtlas(snapshot && snapshot->complete ? snapshot->path : QString());
    m_dirty = false;
    setEnabled(snapshot && snapshot->complete);
    resetChart(m_tpotChart, tr("Time per output token"));
    resetChart(m_stallChart, tr("Stall per MoE layer"));
    m_tpot->clear();
    if (!isEnabled()) {
        m_scope->setText(snapshot ? tr("A partial atlas: finish the capture to simulate it.") : QString());
        return;
    }
    const QSignalBlocker b1(m_cache), b2(m_predictor), b3(m_lookahead), b4(m_budget), b5(m_sequences);
    m_topK = std::max(1, snapshot->model.topK);
    m_experts = std::max(m_topK, snapshot->numExperts());
    const QString keep = m_predictor->currentText();
    m_predictor->clear();
    for (const Predictor p : simulatablePredictors(snapshot->prefetchInfo.get()))
        m_predictor->addItem(qs(predictorName(p)), static_cast<int>(p));
    const int kept = m_predictor->findText(keep);
    m_predictor->setCurrentIndex(std::max(kept, 0));
    m_lookahead->setRange(1, std::max(1, snapshot->numLayers() - 1));
    m_budget->setRange(m_topK, m_experts);
    if (snapshot->path != previous) {
        m_budget->setValue(m_topK);
        int sequences = 0;
        for (const AtlasDomain& d : snapshot->domains)
            sequences = std::max(sequences, static_cast<int>(d.numSamples));
        m_sequences->setRange(1, std::max(1, sequences));
        m_sequences->setValue(std::min(8, std::max(1, sequences)));
        presetChanged(); // the preset's link
        cacheModeChanged(); // the cache's range
        return; // both schedule a run
    }
    schedule();
}

void PrefetchWhatIf::setSpeculativePredictors(std::vector<Predictor> predictors)
{
    if (predictors == m_speculative)
        return;
    m_speculative = std::move(predictors);
    schedule();
}

WhatIfSettings PrefetchWhatIf::settings() const
{
    WhatIfSettings s;
    s.hardware = m_preset->currentText().toStdString();
    s.globalCache = m_cacheMode->currentIndex() == 1;
    s.slots = m_cache->value();
    s.globalFraction = m_cache->value() / 100.0;
    s.linkBandwidth = m_bandwidth->value() * kBandwidthStep;
    s.policy = static_cast<SimPolicy>(m_policy->currentData().toInt());
    s.eviction = static_cast<Eviction>(m_eviction->currentData().toInt());
    s.predictor = static_cast<Predictor>(m_predictor->currentData().toInt());
    s.lookahead = m_lookahead->value();
    s.budget = m_budget->value();
    s.sequencesPerDomain = m_sequences->value();
    s.speculative = m_speculative;
    return s;
}

void PrefetchWhatIf::presetChanged()
{
    try {
        const HardwareSpec hw = loadHardware(m_preset->currentText().toStdString(), "hardware");
        const QSignalBlocker block(m_bandwidth);
        m_bandwidth->setValue(static_cast<int>(std::lround(hw.linkBandwidth / kBandwidthStep)));
        m_preset->setToolTip(qs(hw.gpu + ", " + hw.link));
    } catch (const std::exception& e) {
        m_error = QString::fromUtf8(e.what());
    }
    updateLabels();
    schedule();
}

void PrefetchWhatIf::cacheModeChanged()
{
    const QSignalBlocker block(m_cache);
    if (m_cacheMode->currentIndex() == 1) {
        m_cache->setRange(1, 100);
        m_cache->setValue(25);
    } else {
        m_cache->setRange(m_topK, m_experts);
        m_cache->setValue(std::max(m_topK, m_experts / 2));
    }
    updateLabels();
    schedule();
}

void PrefetchWhatIf::updateLabels()
{
    m_bandwidthLabel->setText(tr("%1 GB/s").arg(m_bandwidth->value() * kBandwidthStep / 1e9, 0, 'f', 1));
    if (m_cacheMode->currentIndex() == 1) {
        const double total = m_shown ? m_shown->totalExpertBytes : 0;
        m_cacheLabel->setText(total > 0
                ? tr("%1% = %2 GiB").arg(m_cache->value()).arg(m_cache->value() / 100.0 * total / kGiB, 0, 'g', 3)
                : tr("%1% of all experts").arg(m_cache->value()));
    } else {
        m_cacheLabel->setText(tr("%1 of %2").arg(m_cache->value()).arg(m_experts));
    }
}

void PrefetchWhatIf::schedule()
{
    if (!isEnabled() || !m_snapshot)
        return;
    if (!isVisible()) {
        m_dirty = true;
        return;
    }
    m_debounce->start();
}

void PrefetchWhatIf::showEvent(QShowEvent* event)
{
    QWidget::showEvent(event);
    if (m_dirty) {
        m_dirty = false;
        schedule();
    }
}

void PrefetchWhatIf::run()
{
    if (m_snapshot && isEnabled())
        m_runner->request(settings());
}

QString PrefetchWhatIf::tpotText() const
{
    return m_tpot->text();
}

void PrefetchWhatIf::show(const WhatIfOutcome& o)
{
    m_shown = std::make_shared<const WhatIfOutcome>(o);
    updateLabels();
    const SimResult& r = o.result;
    const SimResult& b = o.baseline;
    const QString policy = qs(simPolicyName(o.settings.policy));
    m_scope->setText(tr("Simulated: the first %1 sequences of each domain (%2 of %3 sequences, %4 tokens), batch "
                        "1, %5, %6. moeatlas simulate runs every sequence.")
                         .arg(o.settings.sequencesPerDomain)
                         .arg(o.slice.sequences)
                         .arg(o.slice.totalSequences)
                         .arg(o.slice.tokens)
                         .arg(qs(describeCache(o.job.config.cache)))
                         .arg(tr("link %1 GB/s").arg(o.job.config.linkBandwidth / 1e9, 0, 'f', 1)));
    const auto [scale, unit] = timeUnit(std::max(r.tpotMean, b.tpotMean));
    const double speedup = r.tpotMean > 0 ? b.tpotMean / r.tpotMean : 0;
    m_tpot->setText(tr("TPOT %1 %2 (compute %3 + stall %4) with %5; on-demand %6 %2 (stall %7): %8× %9")
                        .arg(r.tpotMean * scale, 0, 'f', 3)
                        .arg(unit)
                        .arg(r.computePerToken * scale, 0, 'f', 3)
                        .arg(r.stallPerToken * scale, 0, 'f', 3)
                        .arg(policy)
                        .arg(b.tpotMean * scale, 0, 'f', 3)
                        .arg(b.stallPerToken * scale, 0, 'f', 3)
                        .arg(speedup, 0, 'f', 2)
                        .arg(speedup >= 1 ? tr("faster") : tr("(slower)")));

    resetChart(m_tpotChart, tr("Time per output token (%1)").arg(unit));
    auto* stacked = new QStackedBarSeries;
    auto* compute = new QBarSet(tr("compute"));
    auto* stall = new QBarSet(tr("stall"));
    // Compute and stall per token add up to the TPOT (the simulator's step time is the two together).
    *compute << b.computePerToken * scale << r.computePerToken * scale;
    *stall << b.stallPerToken * scale << r.stallPerToken * scale;
    stacked->append(compute);
    stacked->append(stall);
    attach(m_tpotChart, stacked, { tr("on-demand"), policy }, unit, std::max(r.tpotMean, b.tpotMean) * scale);

    double top = 0;
    const auto perStep = [&](const SimResult& res) {
        std::vector<double> v;
        v.reserve(res.layers.size());
        for (const SimLayerStats& l : res.layers)
            v.push_back(res.steps > 0 ? l.stall / static_cast<double>(res.steps) : 0.0);
        for (const double x : v)
            top = std::max(top, x);
        return v;
    };
    const std::vector<double> mine = perStep(r);
    const std::vector<double> base = perStep(b);
    const auto [lscale, lunit] = timeUnit(top);
    resetChart(m_stallChart, tr("Stall per MoE layer and decode step (%1)").arg(lunit));
    auto* bars = new QBarSeries;
    for (const auto& [name, values] : { std::pair { policy, &mine }, std::pair { tr("on-demand"), &base } }) {
        if (name == tr("on-demand") && o.settings.policy == SimPolicy::OnDemand)
            continue;
        auto* set = new QBarSet(name);
        for (const double v : *values)
            set->append(v * lscale);
        bars->append(set);
    }
    QStringList layers;
    for (const int l : o.job.compute.costs.moeLayers)
        layers << QString::number(l);
    attach(m_stallChart, bars, layers, lunit, top * lscale);
    Q_EMIT outcomeShown();
}

} // namespace moeatlas::views
